"""Stage ``masks``: one binary salient-target mask per training pair, and its measured quality.

Pairs with a hand-drawn mask keep it (method ``manual``); every other training pair gets an
automatic mask from :mod:`pipeline.segmentation.saliency` (``masks.method``: ``sam`` or
``ir_saliency``). The automatic method is also run on the manually masked pairs and scored
against them (IoU, precision, recall) in ``reports/masks.json`` (DVC metrics ``mask_iou``,
``mask_precision``, ``mask_recall``) and ``reports/masks_per_image.csv``; the counts go to
``reports/masks_summary.json``; ``reports/masks_preview.png`` shows infrared | visible |
automatic | manual mask.

Outputs: ``data/masks/<dataset>/<pair>.png`` (0/255) and ``data/masks/index.csv``
(pair_id, mask, method), built aside and renamed into place at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from tqdm import tqdm

from pipeline.core.atomic import atomic_path, write_json
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import ImageError, read_grey_uint8, read_image, to_uint8
from pipeline.core.params import PROJECT_ROOT, MasksParams, Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import place
from pipeline.core.stage import stage_main
from pipeline.segmentation.saliency import SamPromptSegmenter, ir_saliency

Segmenter = Callable[[np.ndarray], np.ndarray]  # uint8 infrared HxW -> boolean mask HxW


class MasksError(CoconetError, RuntimeError):
    """The stage cannot run with these inputs or params."""


def sam_checkpoint(params: MasksParams, root: Path) -> Path:
    """Where the download stage puts the SAM checkpoint for ``masks.sam_model``."""
    return ProjectPaths(root).weights / f"sam_{params.sam_model}.pth"


def make_segmenter(params: MasksParams, root: Path = PROJECT_ROOT) -> Segmenter:
    """The automatic mask method the params select."""
    if params.method == "ir_saliency":
        return lambda ir: ir_saliency(
            ir,
            sigma=params.saliency_sigma,
            surround=params.saliency_surround,
            k=params.saliency_k,
            k_low=params.saliency_k_low,
            min_region_frac=params.min_region_frac,
        )
    checkpoint = sam_checkpoint(params, root)
    if not checkpoint.is_file():
        raise MasksError(
            f"{checkpoint}: no SAM checkpoint for masks.sam_model={params.sam_model}. Set "
            f"download.sam={params.sam_model} (and re-run the download stage), or use "
            "masks.method=ir_saliency."
        )
    from pipeline.segmentation.sam_model import load_sam_predictor  # torch: only for SAM

    predictor = load_sam_predictor(params.sam_model, checkpoint, place(params.device).device)
    return SamPromptSegmenter(predictor, params)


def mask_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """IoU, precision and recall of a predicted mask against the reference (1.0 if both empty)."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    inter = float(np.logical_and(predicted, truth).sum())
    union = float(np.logical_or(predicted, truth).sum())
    n_pred, n_true = float(predicted.sum()), float(truth.sum())
    return {
        "iou": inter / union if union else 1.0,
        "precision": inter / n_pred if n_pred else float(n_true == 0),
        "recall": inter / n_true if n_true else 1.0,
    }


def _write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG")


def _preview(
    paths: ProjectPaths, rows: list[dict], auto: dict[str, np.ndarray], count: int
) -> None:
    """Grid of infrared | visible | automatic mask | manual mask for a few pairs."""
    manual = [r for r in rows if r["method"] == "manual" and r["pair_id"] in auto]
    other = [r for r in rows if r["method"] != "manual" and r["pair_id"] in auto]
    n_manual = min(len(manual), (count + 1) // 2)
    picks = _spread(manual, n_manual) + _spread(other, count - n_manual)
    picks += _spread([r for r in manual if r not in picks], count - len(picks))
    if not picks:
        return
    titles = ("infrared", "visible", "automatic mask", "manual mask")
    fig = Figure(figsize=(12, 2.6 * len(picks)))
    axes = fig.subplots(len(picks), 4, squeeze=False)
    for ax_row, row in zip(axes, picks, strict=True):
        images = [
            read_image(paths.root / row["ir"]),
            read_image(paths.root / row["vis"]),
            auto[row["pair_id"]],
            read_grey_uint8(paths.root / row["mask"]) if row["method"] == "manual" else None,
        ]
        for ax, image, title in zip(ax_row, images, titles, strict=True):
            ax.axis("off")
            if image is not None:
                ax.imshow(image, cmap="gray", vmin=0, vmax=1 if image.dtype != np.uint8 else 255)
                ax.set_title(f"{row['pair_id']}: {title}", fontsize=8)
    fig.tight_layout()
    paths.reports.mkdir(parents=True, exist_ok=True)
    fig.savefig(paths.masks_preview, dpi=80, metadata={"Software": None})


def _spread(items: list, count: int) -> list:
    if count <= 0 or not items:
        return []
    picks = np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int)
    return [items[i] for i in dict.fromkeys(picks)]


def run(params: Params, paths: ProjectPaths, segmenter: Segmenter | None = None) -> dict:
    """Run the stage; returns the summary written to ``reports/masks.json``."""
    p = params.masks
    root = paths.root
    index_path = paths.index
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: no raw index; run the download stage first")
    index = pd.read_csv(index_path, keep_default_na=False, dtype=str)
    train = index[index["split"] == "train"].to_dict("records")
    if not train:
        raise MasksError(f"{index_path}: no training pairs")
    segmenter = segmenter or make_segmenter(p, root)
    paths.data.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".masks-", dir=paths.data))
    rows, scores, auto = [], [], {}
    try:
        for row in tqdm(train, desc=f"masks ({p.method})", unit="pair"):
            ir = read_grey_uint8(root / row["ir"])
            predicted = segmenter(ir)
            auto[row["pair_id"]] = predicted
            if row["mask"]:
                truth = read_grey_uint8(root / row["mask"]) > 127
                if truth.shape != ir.shape:
                    raise ImageError(f"{root / row['mask']}: mask size differs from infrared")
                scores.append({"pair_id": row["pair_id"], **mask_scores(predicted, truth)})
                mask, method = truth, "manual"
            else:
                mask, method = predicted, p.method
            rel = paths.masks.relative_to(root) / row["dataset"] / f"{row['pair']}.png"
            _write_mask(tmp / row["dataset"] / f"{row['pair']}.png", mask)
            rows.append(
                {**row, "out": rel.as_posix(), "method": method, "area_frac": float(mask.mean())}
            )
        masks_index = pd.DataFrame(
            {
                "pair_id": [r["pair_id"] for r in rows],
                "mask": [r["out"] for r in rows],
                "method": [r["method"] for r in rows],
            }
        )
        masks_index.to_csv(tmp / "index.csv", index=False)
        if paths.masks.exists():
            shutil.rmtree(paths.masks)
        os.replace(tmp, paths.masks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    per_image = pd.DataFrame(scores, columns=["pair_id", "iou", "precision", "recall"])
    quality = {  # DVC metrics: the automatic method against the hand-drawn masks
        "mask_iou": _mean(per_image["iou"]),
        "mask_precision": _mean(per_image["precision"]),
        "mask_recall": _mean(per_image["recall"]),
    }
    summary = {  # counts, a plain report
        "method": p.method,
        "pairs": len(rows),
        "manual": sum(r["method"] == "manual" for r in rows),
        "automatic": sum(r["method"] != "manual" for r in rows),
        "evaluated": len(per_image),
        "mean_area_frac": round(float(np.mean([r["area_frac"] for r in rows])), 6),
    }
    write_json(paths.masks_report, quality)
    write_json(paths.masks_summary, summary)
    with atomic_path(paths.masks_per_image) as tmp:
        per_image.round(6).to_csv(tmp, index=False)
    _preview(
        paths, rows, {k: to_uint8(v.astype(np.float32)) for k, v in auto.items()}, p.preview_pairs
    )
    print(
        f"data/masks: {summary['manual']} manual + {summary['automatic']} {p.method}; "
        f"{p.method} vs manual on {summary['evaluated']} pairs: IoU {_show(quality['mask_iou'])}, "
        f"precision {_show(quality['mask_precision'])}, recall {_show(quality['mask_recall'])}"
    )
    return {**summary, **quality}


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _mean(values: pd.Series) -> float | None:
    return round(float(values.mean()), 6) if len(values) else None


if __name__ == "__main__":
    stage_main(run, __doc__.splitlines()[0])
