"""Salient-target masks from infrared images: segment-anything prompted at hot spots, or a
classical centre-surround saliency."""
