"""Classical infrared/visible fusion baselines for the evaluate stage's comparison table.

Each baseline is ``fuse(vis_grey, ir_grey) -> grey`` on float 0..1 arrays of the same
height and width (any size, odd ones included); the result has that size, float32 in 0..1.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

LAPLACIAN_LEVELS = 4  # pyramid levels below full resolution (fewer for small images)


def _check(vis: np.ndarray, ir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vis, ir = np.asarray(vis), np.asarray(ir)
    if vis.ndim != 2 or ir.ndim != 2:
        raise ValueError(f"baselines fuse 2-D grey images, got vis {vis.shape} and ir {ir.shape}")
    if vis.shape != ir.shape:
        raise ValueError(f"image sizes differ: vis {vis.shape}, ir {ir.shape} (H, W)")
    return vis.astype(np.float32), ir.astype(np.float32)


def average(vis_grey: np.ndarray, ir_grey: np.ndarray) -> np.ndarray:
    """Per-pixel mean of the two sources."""
    vis, ir = _check(vis_grey, ir_grey)
    return (vis + ir) / 2.0


def maximum(vis_grey: np.ndarray, ir_grey: np.ndarray) -> np.ndarray:
    """Per-pixel maximum of the two sources (keeps hot targets and bright visible detail)."""
    vis, ir = _check(vis_grey, ir_grey)
    return np.maximum(vis, ir)


def _laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass levels (finest first) followed by the low-pass residual (OpenCV pyramids)."""
    gaussian = [image]
    for _ in range(levels):
        gaussian.append(cv2.pyrDown(gaussian[-1]))
    bands = []
    for fine, coarse in zip(gaussian[:-1], gaussian[1:], strict=True):
        height, width = fine.shape
        bands.append(fine - cv2.pyrUp(coarse, dstsize=(width, height)))
    return [*bands, gaussian[-1]]


def laplacian_pyramid(
    vis_grey: np.ndarray, ir_grey: np.ndarray, levels: int = LAPLACIAN_LEVELS
) -> np.ndarray:
    """Laplacian-pyramid fusion (Burt and Adelson 1983; Burt and Kolczynski 1993).

    Band-pass coefficients: the one of larger magnitude (max-abs selection); low-pass
    residual: the mean of the two. ``levels`` shrinks so that the coarsest level keeps at
    least 2 pixels a side; the reconstruction is clipped to 0..1.
    """
    vis, ir = _check(vis_grey, ir_grey)
    levels = max(0, min(levels, int(np.floor(np.log2(min(vis.shape) / 2.0)))))
    pyr_vis, pyr_ir = _laplacian_pyramid(vis, levels), _laplacian_pyramid(ir, levels)
    fused = [
        np.where(np.abs(v) >= np.abs(i), v, i)
        for v, i in zip(pyr_vis[:-1], pyr_ir[:-1], strict=True)
    ]
    out = (pyr_vis[-1] + pyr_ir[-1]) / 2.0
    for band in reversed(fused):
        height, width = band.shape
        out = cv2.pyrUp(out, dstsize=(width, height)) + band
    return np.clip(out, 0.0, 1.0)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "average": average,
    "max": maximum,
    "laplacian": laplacian_pyramid,
}
