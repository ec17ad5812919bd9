"""Stage ``patches``: cut aligned training patches into one HDF5 file, reproducibly.

Every training pair (``data/raw/index.csv`` split ``train``, mask from ``data/masks``) is cut
as :mod:`pipeline.data.patch_cutting` describes, into ``data/patches.h5``
(:mod:`pipeline.data.patch_file`). Same inputs and params give a byte-identical file: one
seeded generator, a seeded ``A.Compose``, and HDF5 objects written without timestamps.
``reports/patches.json``: counts and per-channel statistics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.atomic import write_json
from pipeline.core.imageio import ImageError
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.stage import stage_main
from pipeline.data.patch_cutting import cut_pairs
from pipeline.data.patch_file import CHANNELS, write_patch_file


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
    per_dataset: dict[str, int] = {}
    totals = {"windows": 0, "near_empty": 0, "subsampled": 0}
    skipped = 0
    sums = np.zeros(len(CHANNELS))
    squares = np.zeros(len(CHANNELS))
    with write_patch_file(paths.patches, p.patch_size, p.model_dump()) as writer:
        bar = tqdm(pairs, desc="patches", unit="pair")
        for row, yx, patches, counts in cut_pairs(paths.root, bar, p):
            totals = {k: totals[k] + counts[k] for k in totals}
            if counts["windows"] == 0:
                skipped += 1
                continue
            writer.append(patches, row["pair_id"], yx)
            per_dataset[row["dataset"]] = per_dataset.get(row["dataset"], 0) + len(patches)
            flat = patches.reshape(len(patches), len(CHANNELS), -1).astype(np.float64)
            sums += flat.mean(axis=2).sum(axis=0)
            squares += (flat**2).mean(axis=2).sum(axis=0)
        count = writer.count
        if count == 0:
            raise ImageError(
                f"no patch of {p.patch_size}x{p.patch_size} could be cut from {len(pairs)} pairs"
            )
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
        "mask_fraction": round(float(mean[CHANNELS.index("mask")] / 255.0), 6),
        "bytes": paths.patches.stat().st_size,
    }
    write_json(paths.patches_report, summary)
    print(
        f"data/patches.h5: {count} patches from {summary['pairs']} pairs {summary['per_dataset']}"
    )
    return summary


if __name__ == "__main__":
    stage_main(run, __doc__.splitlines()[0])
