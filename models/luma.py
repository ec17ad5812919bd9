"""ITU-R BT.601 luma weights: the one colour-to-grey rule, shared by image reading (a colour
visible image fused in Y) and the VGG-19 first layer summed for one-channel input."""

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
