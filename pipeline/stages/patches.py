"""Stage ``patches``: cut aligned training patches into one HDF5 file, reproducibly.

For every training pair (``data/raw/index.csv`` split ``train``, mask from ``data/masks``) a
grid of ``size`` x ``size`` windows with step ``stride`` is cut from the stacked channels
[visible Y (BT.601 luma), infrared, mask 0/255]; windows where both sources are near-empty
(standard deviation below ``min_std`` on the 0..255 scale) are dropped, at most
``max_per_pair`` are drawn at random (seeded), and each patch is augmented by albumentations
(flips / 90-degree rotations) identically across its three channels (infrared as an
``additional_targets`` image, the mask as the mask target). Same inputs and params give a
byte-identical file: one seeded generator, a seeded ``A.Compose``, and HDF5 objects written
without timestamps.

``data/patches.h5``: ``patches`` uint8 (N, 3, S, S); ``pair_id`` (N,) UTF-8 strings; ``yx``
(N, 2) int32 top-left corners in the source image; file attributes with the params.
``reports/patches.json``: counts and per-channel statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import h5py
import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from pipeline.core.imageio import (
    ImageError,
    atomic_path,
    read_grey_uint8,
    read_image,
    to_grey,
    to_uint8,
)
from pipeline.core.params import Params, PatchesParams
from pipeline.core.paths import ProjectPaths
from pipeline.core.stage import stage_main

CHANNELS = ("visible_y", "infrared", "mask")
CHUNK = 64  # patches per HDF5 chunk


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


def grid_patches(
    stack: np.ndarray, p: PatchesParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Top-left corners (M, 2) and patches (M, 3, S, S) kept from one pair, with counts."""
    size, stride = p.size, p.stride
    _, height, width = stack.shape
    ys, xs = np.arange(0, height - size + 1, stride), np.arange(0, width - size + 1, stride)
    counts = {"windows": len(ys) * len(xs), "near_empty": 0, "subsampled": 0}
    if counts["windows"] == 0:
        return np.zeros((0, 2), np.int32), np.zeros((0, 3, size, size), np.uint8), counts
    busy = (window_std(stack[0], size, ys, xs) >= p.min_std) | (
        window_std(stack[1], size, ys, xs) >= p.min_std
    )
    cells = np.argwhere(busy)
    counts["near_empty"] = counts["windows"] - len(cells)
    if p.max_per_pair is not None and len(cells) > p.max_per_pair:
        counts["subsampled"] = len(cells) - p.max_per_pair
        cells = cells[np.sort(rng.choice(len(cells), p.max_per_pair, replace=False))]
    corners = (cells * stride).astype(np.int32)
    windows = sliding_window_view(stack, (size, size), axis=(1, 2))
    patches = windows[:, corners[:, 0], corners[:, 1]].transpose(1, 0, 2, 3)
    return corners, np.ascontiguousarray(patches), counts


def training_pairs(paths: ProjectPaths) -> list[dict]:
    """Training pairs of the raw index joined with their mask from the masks stage."""
    for path in (paths.index, paths.masks_index):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run the download and masks stages")
    raw = pd.read_csv(paths.index, keep_default_na=False, dtype=str)
    masks = pd.read_csv(paths.masks_index, keep_default_na=False, dtype=str)
    train = raw[raw["split"] == "train"].drop(columns=["mask"])
    joined = train.merge(masks.rename(columns={"mask": "mask_out"}), on="pair_id", how="left")
    missing = joined.loc[joined["mask_out"].isna() | (joined["mask_out"] == ""), "pair_id"]
    if len(missing):
        raise FileNotFoundError(
            f"{paths.masks_index}: no mask for {', '.join(missing[:5])}; re-run the masks stage"
        )
    return joined.sort_values("pair_id", kind="stable").to_dict("records")


def run(params: Params, paths: ProjectPaths) -> dict:
    """Run the stage; returns the summary written to ``reports/patches.json``."""
    p = params.patches
    pairs = training_pairs(paths)
    rng = np.random.default_rng(p.seed)
    augment = augmenter(p)
    pair_ids: list[str] = []
    corners: list[np.ndarray] = []
    per_dataset: dict[str, int] = {}
    totals = {"windows": 0, "near_empty": 0, "subsampled": 0}
    skipped = 0
    sums = np.zeros(3)
    squares = np.zeros(3)
    with atomic_path(paths.patches) as tmp, h5py.File(tmp, "w", track_order=False) as h5:
        data = h5.create_dataset(
            "patches", shape=(0, 3, p.size, p.size), maxshape=(None, 3, p.size, p.size),
            dtype=np.uint8, chunks=(CHUNK, 3, p.size, p.size), compression="gzip",
            compression_opts=1, track_times=False,
        )  # fmt: skip
        for row in tqdm(pairs, desc="patches", unit="pair"):
            stack = load_pair(paths.root, row)
            yx, patches, counts = grid_patches(stack, p, rng)
            totals = {k: totals[k] + counts[k] for k in totals}
            if counts["windows"] == 0:
                skipped += 1
                continue
            for patch in patches:
                out = augment(image=patch[0], ir=patch[1], mask=patch[2])
                patch[:] = (out["image"], out["ir"], out["mask"])
            start = data.shape[0]
            data.resize(start + len(patches), axis=0)
            data[start:] = patches
            pair_ids += [row["pair_id"]] * len(patches)
            corners.append(yx)
            per_dataset[row["dataset"]] = per_dataset.get(row["dataset"], 0) + len(patches)
            flat = patches.reshape(len(patches), 3, -1).astype(np.float64)
            sums += flat.mean(axis=2).sum(axis=0)
            squares += (flat**2).mean(axis=2).sum(axis=0)
        count = data.shape[0]
        if count == 0:
            raise ImageError(f"no patch of {p.size}x{p.size} could be cut from {len(pairs)} pairs")
        h5.create_dataset("pair_id", data=np.array(pair_ids, dtype=object),
                          dtype=h5py.string_dtype("utf-8"), track_times=False)  # fmt: skip
        h5.create_dataset("yx", data=np.concatenate(corners), track_times=False)
        h5.attrs["channels"] = ",".join(CHANNELS)
        h5.attrs["params"] = json.dumps(p.model_dump(), sort_keys=True)
        for key, value in p.model_dump().items():
            h5.attrs[key] = -1 if value is None else value
    mean = sums / count
    summary = {
        "patches": count,
        "pairs": len(pairs) - skipped,
        "pairs_too_small": skipped,
        "per_dataset": dict(sorted(per_dataset.items())),
        "grid_windows": totals["windows"],
        "near_empty_dropped": totals["near_empty"],
        "subsampling_dropped": totals["subsampled"],
        "channel_mean": dict(zip(CHANNELS, np.round(mean, 4).tolist(), strict=True)),
        "channel_std": dict(
            zip(CHANNELS, np.round(np.sqrt(squares / count - mean**2), 4).tolist(), strict=True)
        ),
        "mask_fraction": round(float(mean[2] / 255.0), 6),
        "bytes": paths.patches.stat().st_size,
    }
    paths.reports.mkdir(parents=True, exist_ok=True)
    paths.patches_report.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"data/patches.h5: {count} patches from {summary['pairs']} pairs {summary['per_dataset']}"
    )
    return summary


if __name__ == "__main__":
    stage_main(run, __doc__.splitlines()[0])
