"""The evaluate stage: fuse every test pair with the trained model and the classical
baselines, score them all, and report.

Outputs: ``reports/evaluation/per_image.csv``, ``reports/evaluation/report.md`` (ranking),
``reports/evaluation/gallery/<pair>.png``, ``reports/evaluation/fused/<pair>.png`` (the
model's fused images, to rescore with ``coconet metrics``), ``reports/metrics.json`` (DVC
metrics: the model's means at top level, each baseline's under ``baselines``). Everything is
also logged to the training's MLflow run (``artifacts/train_run.json``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from models.coconet import CoCoNet
from pipeline.catalogue import natural_key
from pipeline.core.atomic import atomic_path
from pipeline.core.errors import InputError
from pipeline.core.imageio import ImageError, read_image, to_grey, write_image
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import Placement, place
from pipeline.core.stage import stage_main
from pipeline.evaluation.baselines import BASELINES
from pipeline.evaluation.report import write_gallery, write_report
from pipeline.fusion import fuse_arrays
from pipeline.inference import load_fusion_model
from pipeline.metrics import METRIC_DIRECTION, METRIC_NAMES, compute_metrics, mean_metrics
from pipeline.tracking.evaluation_run import MODEL_METHOD as MODEL_NAME
from pipeline.tracking.evaluation_run import REFERENCE_MARK, log_evaluation
from pipeline.tracking.run_record import read_run_info


def load_test_split(index_path: Path, max_pairs: int | None = None) -> pd.DataFrame:
    """The test split of ``data/raw/index.csv`` (sorted by pair id, capped at ``max_pairs``)."""
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{index_path}: no dataset index; run the download stage first (dvc repro download)"
        )
    index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
    missing = {"pair_id", "pair", "split", "ir", "vis"} - set(index.columns)
    if missing:
        raise InputError(f"{index_path}: missing columns {', '.join(sorted(missing))}")
    test = index[index["split"] == "test"]
    test = test.iloc[sorted(range(len(test)), key=lambda i: natural_key(test["pair_id"].iloc[i]))]
    if test.empty:
        raise InputError(f"{index_path}: no pair has split == test")
    return test.head(max_pairs) if max_pairs else test


def output_names(test: pd.DataFrame) -> list[str]:
    """File stems for the outputs: the pair name, or the pair id flattened if names repeat."""
    pairs = test["pair"].tolist()
    if len(set(pairs)) == len(pairs):
        return pairs
    return [pid.replace("/", "__") for pid in test["pair_id"]]


def _methods(
    models: dict[str, CoCoNet], placement: Placement
) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Every method compared: the trained model, the reference models, the classical baselines."""
    methods = {
        name: lambda vis, ir, net=net: fuse_arrays(net, vis, ir, placement)
        for name, net in models.items()
    }
    for name, fuse in BASELINES.items():
        methods[name] = lambda vis, ir, fuse=fuse: fuse(to_grey(vis), to_grey(ir))
    return methods


def reference_names(params: Params) -> list[str]:
    """The reference models to score: ``evaluate.references``, where ``auto`` means the official
    model whenever the download stage fetches it."""
    refs = params.evaluate.references
    if refs == "auto":
        return ["official"] if params.download.official != "none" else []
    return list(refs)


def load_references(
    params: Params, paths: ProjectPaths, placement: Placement
) -> dict[str, CoCoNet]:
    """Reference rows of the comparison, by report name (marked as references)."""
    models = {}
    for ref in reference_names(params):
        if not paths.official_model.is_file():
            raise InputError(
                f"{paths.official_model}: no official model; set download.official: latest and "
                "run the download stage, or set evaluate.references: []"
            )
        models[f"{ref}{REFERENCE_MARK}"] = load_fusion_model(str(paths.official_model), placement)
    return models


def _staging(target: Path) -> Path:
    """An empty folder beside ``target`` to build the outputs in."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _clean(value: float) -> float | None:
    """NaN as JSON null (DVC and strict JSON readers reject NaN)."""
    return None if value is None or math.isnan(value) else float(value)


def run(params: Params, paths: ProjectPaths, device: str | None = None) -> dict[str, Any]:
    """Run the stage on ``device`` (default ``evaluate.device``); returns the means per
    method."""
    ep = params.evaluate
    run_info = read_run_info(paths.run_info)
    test = load_test_split(paths.index, ep.max_pairs)
    placement = place(device or ep.device, ep.precision, ep.max_memory)
    print(
        f"evaluating on {placement.device} in {placement.precision} "
        f"(evaluate.device: {ep.device}, evaluate.precision: {ep.precision})"
    )
    model = load_fusion_model(str(paths.model), placement)
    references = load_references(params, paths, placement)
    methods = _methods({MODEL_NAME: model, **references}, placement)
    names = output_names(test)

    out = _staging(paths.evaluation)  # swapped in at the end: no stale or partial outputs
    rows: list[dict[str, Any]] = []
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    gallery: list[str] = []
    pairs = list(zip(test.itertuples(index=False), names, strict=True))
    for number, (pair, name) in enumerate(tqdm(pairs, desc="evaluate", unit="pair")):
        ir = read_image(paths.root / pair.ir)
        vis = read_image(paths.root / pair.vis)
        if ir.shape[:2] != vis.shape[:2]:
            raise ImageError(f"{pair.ir} and {pair.vis}: sizes differ")
        fused_by_method = {}
        for method, fuse in methods.items():
            tic = time.perf_counter()
            fused = fuse(vis, ir)
            seconds[method].append(time.perf_counter() - tic)
            fused_by_method[method] = fused
            scores = compute_metrics(ir, vis, fused, convention=ep.convention)
            rows.append({"pair_id": pair.pair_id, "method": method, **scores})
        write_image(out / "fused" / f"{name}.png", fused_by_method[MODEL_NAME])
        if number < ep.gallery_pairs:
            panels = [("infrared", ir), ("visible", vis), *fused_by_method.items()]
            write_gallery(out / "gallery" / f"{name}.png", pair.pair_id, panels)
            gallery.append(f"gallery/{name}.png")

    per_image = pd.DataFrame(rows, columns=["pair_id", "method", *METRIC_NAMES])
    with atomic_path(out / "per_image.csv") as tmp:
        per_image.to_csv(tmp, index=False, float_format="%.6g")
    means = {
        m: mean_metrics(r for r in rows if r["method"] == m)  # NaN only where undefined
        for m in methods
    }
    mean_seconds = {m: float(np.mean(s)) for m, s in seconds.items()}
    summary = {
        **{k: _clean(v) for k, v in means[MODEL_NAME].items()},
        "n_pairs": len(pairs),
        "convention": ep.convention,
        "precision": str(placement.precision),
        "baselines": {
            m: {k: _clean(v) for k, v in means[m].items()}
            for m in methods
            if m != MODEL_NAME and m not in references
        },
        "references": {
            m.removesuffix(REFERENCE_MARK): {k: _clean(v) for k, v in means[m].items()}
            for m in references
        },
    }
    context = {
        "test pairs": f"{len(pairs)} (split == test in {paths.index.relative_to(paths.root)})",
        "metric convention": ep.convention,
        "model": f"{paths.model.relative_to(paths.root)} (MLflow run {run_info['run_id']})",
        "VGG-19 weights": str(run_info.get("vgg_weights", "?")),
        "precision": f"{placement.precision} (evaluate.precision: {ep.precision})",
        "references": ", ".join(references) + " (the authors' trained model, same split and "
        "convention)"
        if references
        else "none",
    }
    write_report(out / "report.md", means, METRIC_DIRECTION, context, gallery, mean_seconds)
    shutil.rmtree(paths.evaluation, ignore_errors=True)
    out.rename(paths.evaluation)
    with atomic_path(paths.metrics) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log_evaluation(run_info, paths, means, test)
    return means


if __name__ == "__main__":
    stage_main(run, __doc__.splitlines()[0])
