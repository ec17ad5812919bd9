"""YCbCr conversion for colour fusion (kornia's BT.601 full-range conversion, on 0..1 arrays)."""

from __future__ import annotations

import numpy as np
import torch
from kornia.color import rgb_to_ycbcr as _rgb_to_ycbcr
from kornia.color import ycbcr_to_rgb as _ycbcr_to_rgb


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]


def _to_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].permute(1, 2, 0).cpu().numpy()


def rgb_to_ycbcr(image: np.ndarray) -> np.ndarray:
    """HxWx3 RGB on 0..1 -> HxWx3 YCbCr (Y, Cb, Cr on 0..1, chroma centred on 0.5)."""
    return _to_array(_rgb_to_ycbcr(_to_tensor(image)))


def ycbcr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_ycbcr``, clipped to 0..1."""
    return np.clip(_to_array(_ycbcr_to_rgb(_to_tensor(image))), 0.0, 1.0)
