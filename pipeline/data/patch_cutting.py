"""Cutting training patches from a pair: a grid of windows, the busy ones kept, a seeded subset,
and augmentations applied alike to all three channels.

A pair is stacked as (3, H, W) uint8 [visible Y (BT.601 luma), infrared, mask 0/255]. A grid
of ``patch_size`` x ``patch_size`` windows with step ``stride`` is laid over it; windows where
both sources are near-empty (standard deviation below ``min_std`` on the 0..255 scale) are
dropped, at most
``max_per_pair`` are drawn at random (seeded), and each patch is flipped / rotated by
albumentations identically across its channels (infrared as an ``additional_targets`` image, the
mask as the mask target). :func:`cut_pairs` does all of it for a run's pairs, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.core.imageio import ImageError, read_grey_uint8, read_image, to_grey, to_uint8
from pipeline.core.params import PatchesParams
from pipeline.data.patch_file import CHANNELS


def augmenter(p: PatchesParams) -> A.Compose:
    """Seeded flips/rotations applied alike to visible, infrared (extra image) and mask."""
    return A.Compose(
        [
            A.HorizontalFlip(p=p.hflip_p),
            A.VerticalFlip(p=p.vflip_p),
            A.RandomRotate90(p=p.rotate90_p),
        ],
        additional_targets={"ir": "image"},
        seed=p.seed,
    )


def load_pair(root: Path, row: dict) -> np.ndarray:
    """Stack (3, H, W) uint8: visible Y, infrared, mask (0/255)."""
    vis = to_uint8(to_grey(read_image(root / row["vis"])))
    ir = read_grey_uint8(root / row["ir"])
    mask = np.where(read_grey_uint8(root / row["mask_out"]) > 127, 255, 0).astype(np.uint8)
    if not vis.shape == ir.shape == mask.shape:
        raise ImageError(
            f"{row['pair_id']}: sizes differ: visible {vis.shape}, infrared {ir.shape}, "
            f"mask {mask.shape} ({root / row['mask_out']})"
        )
    return np.stack([vis, ir, mask])


def window_std(image: np.ndarray, size: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Standard deviation of every ``size`` x ``size`` window with top-left (ys x xs) corners."""
    total, squares = cv2.integral2(image, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
    y, x = np.meshgrid(ys, xs, indexing="ij")

    def box(t: np.ndarray) -> np.ndarray:
        return t[y + size, x + size] - t[y, x + size] - t[y + size, x] + t[y, x]

    n = size * size
    mean = box(total) / n
    return np.sqrt(np.maximum(box(squares) / n - mean**2, 0.0))


def busy_cells(vis_y: np.ndarray, ir: np.ndarray, p: PatchesParams) -> tuple[np.ndarray, int]:
    """(grid cells (K, 2) whose window is not near-empty in either source, windows in the
    grid) for uint8 visible Y and infrared images of one size."""
    size, stride = p.patch_size, p.stride
    height, width = vis_y.shape
    ys, xs = np.arange(0, height - size + 1, stride), np.arange(0, width - size + 1, stride)
    if len(ys) == 0 or len(xs) == 0:
        return np.zeros((0, 2), np.int64), 0
    busy = (window_std(vis_y, size, ys, xs) >= p.min_std) | (
        window_std(ir, size, ys, xs) >= p.min_std
    )
    return np.argwhere(busy), len(ys) * len(xs)


def grid_patches(
    stack: np.ndarray, p: PatchesParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Top-left corners (M, 2) and patches (M, 3, S, S) kept from one pair, with counts."""
    size, stride = p.patch_size, p.stride
    cells, windows = busy_cells(stack[0], stack[1], p)
    counts = {"windows": windows, "near_empty": 0, "subsampled": 0}
    if windows == 0:
        empty = np.zeros((0, len(CHANNELS), size, size), np.uint8)
        return np.zeros((0, 2), np.int32), empty, counts
    counts["near_empty"] = counts["windows"] - len(cells)
    if p.max_per_pair is not None and len(cells) > p.max_per_pair:
        counts["subsampled"] = len(cells) - p.max_per_pair
        cells = cells[np.sort(rng.choice(len(cells), p.max_per_pair, replace=False))]
    corners = (cells * stride).astype(np.int32)
    windows = sliding_window_view(stack, (size, size), axis=(1, 2))
    patches = windows[:, corners[:, 0], corners[:, 1]].transpose(1, 0, 2, 3)
    return corners, np.ascontiguousarray(patches), counts


def augment(patches: np.ndarray, transform: A.Compose) -> np.ndarray:
    """Apply ``transform`` (:func:`augmenter`) to each patch of (M, 3, S, S) ``patches``, alike
    across its channels, in place; returns ``patches``."""
    for patch in patches:
        out = transform(image=patch[0], ir=patch[1], mask=patch[2])
        patch[:] = (out["image"], out["ir"], out["mask"])
    return patches


def cut_pairs(
    root: Path, pairs: Iterable[dict], p: PatchesParams
) -> Iterator[tuple[dict, np.ndarray, np.ndarray, dict[str, int]]]:
    """For each pair (row with ``vis``, ``ir``, ``mask_out`` under ``root``), in order: the row,
    corners, augmented patches and counts of :func:`grid_patches`. One seeded generator and
    one seeded augmenter serve all pairs, so the same pairs and params give the same patches."""
    rng = np.random.default_rng(p.seed)
    transform = augmenter(p)
    for row in pairs:
        yx, patches, counts = grid_patches(load_pair(root, row), p, rng)
        yield row, yx, augment(patches, transform), counts
