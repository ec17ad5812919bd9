"""YCbCr conversion for colour fusion: BT.601 full range on 0..1 arrays, in numpy.

The coefficients are kornia's (``kornia.color.rgb_to_ycbcr``: Cb = 0.564 (B - Y) + 0.5,
Cr = 0.713 (R - Y) + 0.5) and the inverse is their exact inverse, as kornia's; numpy keeps the
conversion off torch and kornia's import (about 0.5 s) on ``coconet fuse``'s path.
"""

from __future__ import annotations

import numpy as np

from models.luma import LUMA_WEIGHTS

CB_SCALE, CR_SCALE, CHROMA_OFFSET = 0.564, 0.713, 0.5


def _channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    image = np.asarray(image, dtype=np.float32)
    return image[..., 0], image[..., 1], image[..., 2]


def rgb_to_ycbcr(image: np.ndarray) -> np.ndarray:
    """HxWx3 RGB on 0..1 -> HxWx3 float32 YCbCr (Y, Cb, Cr on 0..1, chroma centred on 0.5)."""
    r, g, b = _channels(image)
    kr, kg, kb = (np.float32(w) for w in LUMA_WEIGHTS)
    y = kr * r + kg * g + kb * b
    cb = (b - y) * np.float32(CB_SCALE) + np.float32(CHROMA_OFFSET)
    cr = (r - y) * np.float32(CR_SCALE) + np.float32(CHROMA_OFFSET)
    return np.stack([y, cb, cr], axis=-1)


def ycbcr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`, clipped to 0..1 (float32)."""
    y, cb, cr = _channels(image)
    kr, kg, kb = LUMA_WEIGHTS
    cb, cr = cb - np.float32(CHROMA_OFFSET), cr - np.float32(CHROMA_OFFSET)
    r = y + np.float32(1 / CR_SCALE) * cr
    b = y + np.float32(1 / CB_SCALE) * cb
    g = y - np.float32(kr / (kg * CR_SCALE)) * cr - np.float32(kb / (kg * CB_SCALE)) * cb
    return np.clip(np.stack([r, g, b], axis=-1), 0.0, 1.0)
