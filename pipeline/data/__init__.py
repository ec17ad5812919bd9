"""Training data: cutting patches from pairs, the patch file format, and the patch dataset."""
