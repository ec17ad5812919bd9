"""Scoring every fusion method on every test pair: the per-image rows, the means per test set
(and per view: a test set's pairs that a published set covers), the fused images and a labelled
gallery strip for the first pairs of each test set."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.imageio import ImageError, read_image, write_image
from pipeline.evaluation.report import write_gallery
from pipeline.metrics import METRIC_NAMES, compute_metrics, mean_metrics

Fuse = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Scores:
    """What scoring produced: one row per pair and method, seconds per method, gallery files."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    gallery: list[str] = field(default_factory=list)
    partial: set[str] = field(default_factory=set)  # methods scored only on some pairs

    def per_image(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["pair_id", "dataset", "method", *METRIC_NAMES])

    def _means(self, keep: Callable[[dict[str, Any]], bool]) -> dict[str, dict[str, float]]:
        picked: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows:
            if keep(row):
                picked.setdefault(row["method"], []).append(row)
        return {method: mean_metrics(rows) for method, rows in picked.items()}

    def means(
        self, views: Mapping[str, set[str]] | None = None
    ) -> dict[str, dict[str, dict[str, float]]]:
        """``{test set: {method: {metric: mean}}}`` (NaN only where a metric is undefined):
        every test set without the partial methods, then every view (name -> pair ids) with
        all methods on exactly its pairs."""
        test_sets = dict.fromkeys(row["dataset"] for row in self.rows)
        out = {
            s: self._means(lambda r, s=s: r["dataset"] == s and r["method"] not in self.partial)
            for s in test_sets
        }
        for view, pair_ids in (views or {}).items():
            out[view] = self._means(lambda r, ids=pair_ids: r["pair_id"] in ids)
        return out

    def mean_seconds(self) -> dict[str, float]:
        return {m: float(np.mean(s)) for m, s in self.seconds.items() if s}


def score_pairs(
    root: Path,
    test: pd.DataFrame,
    names: list[str],
    methods: Mapping[str, Fuse],
    convention: str,
    out: Path,
    gallery_pairs: int,
    saved_method: str,
    max_pixels: int,
    published: Mapping[str, Mapping[str, str]] | None = None,
) -> Scores:
    """Fuse and score every test pair with every method, and score the ``published`` images
    (method -> {pair_id: project-relative file}) of the pairs they cover; ``saved_method``'s
    fused images go to ``out/fused``, gallery strips of each test set's first ``gallery_pairs``
    to ``out/gallery``."""
    published = published or {}
    scores = Scores(seconds={m: [] for m in methods}, partial=set(published))
    shown: dict[str, int] = {}
    pairs = list(zip(test.itertuples(index=False), names, strict=True))
    for pair, name in tqdm(pairs, desc="evaluate", unit="pair"):
        ir = read_image(root / pair.ir, max_pixels)
        vis = read_image(root / pair.vis, max_pixels)
        if ir.shape[:2] != vis.shape[:2]:
            raise ImageError(f"{pair.ir} and {pair.vis}: sizes differ")
        fused_by_method = {}
        for method, fuse in methods.items():
            tic = time.perf_counter()
            fused_by_method[method] = fuse(vis, ir)
            scores.seconds[method].append(time.perf_counter() - tic)
        for method, files in published.items():
            if pair.pair_id in files:
                fused_by_method[method] = read_image(root / files[pair.pair_id], max_pixels)
                if fused_by_method[method].shape[:2] != ir.shape[:2]:
                    raise ImageError(f"{files[pair.pair_id]}: size differs from {pair.ir}")
        for method, fused in fused_by_method.items():
            metrics = compute_metrics(ir, vis, fused, convention=convention)
            scores.rows.append(
                {"pair_id": pair.pair_id, "dataset": pair.dataset, "method": method, **metrics}
            )
        write_image(out / "fused" / f"{name}.png", fused_by_method[saved_method])
        if shown.get(pair.dataset, 0) < gallery_pairs:
            shown[pair.dataset] = shown.get(pair.dataset, 0) + 1
            panels = [("infrared", ir), ("visible", vis), *fused_by_method.items()]
            write_gallery(out / "gallery" / f"{name}.png", pair.pair_id, panels)
            scores.gallery.append(f"gallery/{name}.png")
    return scores


def clean(value: float | None) -> float | None:
    """NaN as JSON null (DVC and strict JSON readers reject NaN)."""
    return None if value is None or math.isnan(value) else float(value)
