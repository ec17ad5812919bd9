"""Scoring image files with the fusion metrics, for ``coconet metrics``: tables, JSON and CSV."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from pipeline.core.atomic import atomic_path
from pipeline.core.imageio import ImageError, match_pairs, read_image
from pipeline.core.params import DEFAULT_MAX_PIXELS, Convention
from pipeline.metrics import (
    METRIC_DIRECTION,
    METRIC_NAMES,
    MIN_SIDE,
    compute_metrics,
    mean_metrics,
)

MEAN_ROW = "mean"


@dataclass(frozen=True)
class ScoredImage:
    """Metrics of one fused image and the files they came from."""

    name: str
    ir: Path
    vis: Path
    fused: Path
    metrics: dict[str, float]


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def score_files(
    ir: Path,
    vis: Path,
    fused: Path,
    convention: Convention = Convention.matlab,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ScoredImage:
    """Read an (infrared, visible, fused) triple and compute every metric.

    Raises ImageError naming the file for a missing or unreadable image, a size that does
    not match the infrared image, or an image too small for the metrics.
    """
    paths = {"ir": Path(ir), "vis": Path(vis), "fused": Path(fused)}
    images = {role: read_image(path, max_pixels) for role, path in paths.items()}
    reference = images["ir"].shape[:2]
    for role in ("vis", "fused"):
        if images[role].shape[:2] != reference:
            raise ImageError(
                f"{paths[role]}: size {_size(images[role])} does not match "
                f"{paths['ir']} ({_size(images['ir'])})"
            )
    if min(reference) < MIN_SIDE:
        raise ImageError(
            f"{paths['fused']}: {_size(images['fused'])} is too small for the metrics "
            f"(at least {MIN_SIDE}x{MIN_SIDE})"
        )
    metrics = compute_metrics(images["ir"], images["vis"], images["fused"], convention)
    return ScoredImage(name or Path(fused).stem, paths["ir"], paths["vis"], paths["fused"], metrics)


def score_folders(
    ir_dir: Path,
    vis_dir: Path,
    fused_dir: Path,
    convention: Convention = Convention.matlab,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[ScoredImage]:
    """Score every fused image against its sources, pairing files by name (natural order)."""
    pairs = match_pairs(ir=ir_dir, vis=vis_dir, fused=fused_dir)
    return [
        score_files(files["ir"], files["vis"], files["fused"], convention, name, max_pixels)
        for name, files in pairs
    ]


def _clean(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """NaN and infinite values become None (JSON null)."""
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def to_json_dict(scored: Sequence[ScoredImage], convention: str, single: bool) -> dict:
    """A JSON-ready summary of one triple (``single``) or of a folder with its mean."""
    if single:
        item = scored[0]
        return {
            "convention": convention,
            "ir": str(item.ir),
            "vis": str(item.vis),
            "fused": str(item.fused),
            "metrics": _clean(item.metrics),
        }
    return {
        "convention": convention,
        "images": [{"name": s.name, "fused": str(s.fused), **_clean(s.metrics)} for s in scored],
        MEAN_ROW: _clean(mean_metrics(s.metrics for s in scored)),
    }


def write_csv(path: Path, scored: Sequence[ScoredImage]) -> Path:
    """One row per image plus a final ``mean`` row; NaN cells are left empty. Written atomically."""
    rows: list[tuple[str, Mapping[str, float]]] = [(s.name, s.metrics) for s in scored]
    rows.append((MEAN_ROW, mean_metrics(s.metrics for s in scored)))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *METRIC_NAMES])
        for name, metrics in rows:
            writer.writerow([name, *("" if math.isnan(v) else repr(v) for v in metrics.values())])
    return Path(path)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def render_table(scored: Sequence[ScoredImage], convention: str, single: bool):
    """A rich Table: one row per metric for a single triple, else one row per image + mean."""
    arrow = {"higher": "↑", "lower": "↓"}
    if single:
        table = Table(title=f"Fusion metrics ({convention})", caption=str(scored[0].fused))
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("better", justify="center")
        for name, value in scored[0].metrics.items():
            table.add_row(name, _fmt(value), arrow[METRIC_DIRECTION[name]])
        return table
    table = Table(title=f"Fusion metrics ({convention}), {len(scored)} images")
    table.add_column("image")
    for name in METRIC_NAMES:
        table.add_column(f"{name} {arrow[METRIC_DIRECTION[name]]}", justify="right")
    for item in scored:
        table.add_row(item.name, *(_fmt(v) for v in item.metrics.values()))
    table.add_section()
    mean = mean_metrics(s.metrics for s in scored)
    table.add_row(MEAN_ROW, *(_fmt(v) for v in mean.values()), style="bold")
    return table


def print_table(table) -> None:
    """Print a rich table at full width, wider than the terminal if it must be (no '…' cells)."""
    console = Console()
    needed = console.measure(table, options=console.options.update(max_width=100_000)).maximum
    if needed > console.width:
        console = Console(width=needed)
    console.print(table)
