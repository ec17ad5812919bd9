"""YCbCr in numpy: the same numbers as kornia's BT.601 conversion, without importing it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia.color import rgb_to_ycbcr as kornia_rgb_to_ycbcr
from kornia.color import ycbcr_to_rgb as kornia_ycbcr_to_rgb

from pipeline.core.colour import rgb_to_ycbcr, ycbcr_to_rgb


def _nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].permute(1, 2, 0).numpy()


def test_matches_kornia_both_ways():
    rgb = np.random.default_rng(0).random((37, 53, 3), dtype=np.float32)
    ycbcr = rgb_to_ycbcr(rgb)
    np.testing.assert_allclose(ycbcr, _hwc(kornia_rgb_to_ycbcr(_nchw(rgb))), atol=1e-6)
    back = ycbcr_to_rgb(ycbcr)
    np.testing.assert_allclose(back, _hwc(kornia_ycbcr_to_rgb(_nchw(ycbcr))), atol=1e-6)
    np.testing.assert_allclose(back, rgb, atol=1e-6)
    assert ycbcr.dtype == back.dtype == np.float32


def test_refuses_a_grey_image():
    with pytest.raises(ValueError, match="HxWx3"):
        rgb_to_ycbcr(np.zeros((4, 4), dtype=np.float32))
