"""Training data: salient-target masks from infrared images, and the patch dataset."""
