"""The evaluate stage: fuse every test pair with the trained model, the reference models and the
classical baselines, score them all per test set, report, and record the evaluation in its own
MLflow run.

Outputs (each evaluation replaces the last whole: built in a fresh folder, then swapped in):

* ``reports/metrics.json`` (DVC metrics): the model's means, ``{test set: {metric: mean}}``;
* ``reports/comparison.json`` (a plain report): the baselines' and references' means,
  ``{test set: {method: {metric: mean}}}``;
* views ``<test set>:<published set>`` in both: every method on just the test pairs a published
  set (e.g. the authors' released fusions, a marked reference row) covers, with the pair count in
  ``summary.json`` and the report;
* ``reports/evaluation/``: ``per_image.csv``, ``report.md`` (a ranking per test set),
  ``summary.json`` (pairs, convention, placement, test-split fingerprint), ``fused/<pair>.png``
  (the model's images, to rescore with ``coconet metrics``), ``gallery/<pair>.png``;
* ``reports/evaluation_run.json``: the evaluation's MLflow run, which the register stage records
  on the model version.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.coconet import CoCoNet
from pipeline.catalogue import CatalogueError, load_dataset
from pipeline.catalogue.index import load_test_split, output_names, read_index
from pipeline.core.atomic import atomic_path, write_json
from pipeline.core.errors import InputError
from pipeline.core.heap import keep_freed_memory
from pipeline.core.imageio import to_grey
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import Placement, place
from pipeline.core.stage import stage_main
from pipeline.evaluation.baselines import BASELINES
from pipeline.evaluation.comparison import clean, score_pairs
from pipeline.evaluation.promotion import evaluation_fingerprint
from pipeline.evaluation.published import PublishedView, published_views
from pipeline.evaluation.report import write_report
from pipeline.fusion import fuse_arrays
from pipeline.inference import load_fusion_model
from pipeline.metrics import METRIC_DIRECTION
from pipeline.tracking import names
from pipeline.tracking.evaluation_run import EvaluationRun
from pipeline.tracking.run_record import read_run_info

MODEL_NAME = "CoCoNet"
REFERENCE_MARK = " (reference)"


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


def report_notes(test_sets: list[str], views: list[PublishedView]) -> dict[str, list[str]]:
    """What the report says under each table: the catalogue's notes on a test set (e.g.
    near-duplicate pairs), and what each view was scored on."""
    notes: dict[str, list[str]] = {}
    for test_set in test_sets:
        try:
            notes[test_set] = list(load_dataset(test_set).notes)
        except CatalogueError:  # a test set without a catalogue entry has no notes
            notes[test_set] = []
    for view in views:
        notes[view.key] = [view.note()]
    return notes


def _staging(target: Path) -> Path:
    """An empty folder beside ``target`` to build the outputs in."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _swap(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` whole: no file of an earlier evaluation is kept."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def run(params: Params, paths: ProjectPaths, device: str | None = None) -> dict[str, Any]:
    """Run the stage on ``device`` (default ``evaluate.device``); returns the means,
    ``{test set: {method: {metric: mean}}}``."""
    ep = params.evaluate
    run_info = read_run_info(paths.run_info)
    test = load_test_split(paths.index, ep.max_pairs, ep.max_pairs_per_set)
    views = published_views(paths.published_index, test, REFERENCE_MARK)
    fingerprint = evaluation_fingerprint(read_index(paths.index), params)
    placement = place(device or ep.device, ep.precision, ep.max_memory)
    keep_freed_memory()
    print(
        f"evaluating on {placement.device} in {placement.precision} "
        f"(evaluate.device: {ep.device}, evaluate.precision: {ep.precision})"
    )
    model = load_fusion_model(str(paths.model), placement)
    references = load_references(params, paths, placement)
    methods = _methods({MODEL_NAME: model, **references}, placement)
    counts = test.groupby("dataset", sort=False).size().to_dict()
    counts |= {v.key: len(v.fused) for v in views}
    title = f"evaluate {', '.join(f'{k} ({n})' for k, n in counts.items())}"

    with EvaluationRun(run_info, paths.root, params, title) as record:
        out = _staging(paths.evaluation)
        scores = score_pairs(
            paths.root, test, output_names(test), methods, ep.convention, out,
            ep.gallery_pairs, MODEL_NAME, ep.max_pixels, {v.method: v.fused for v in views},
        )  # fmt: skip
        per_image = scores.per_image()
        with atomic_path(out / "per_image.csv") as tmp:
            per_image.to_csv(tmp, index=False, float_format="%.6g")
        means = scores.means({v.key: v.pair_ids for v in views})
        summary = {
            "test_pairs": {str(k): int(v) for k, v in counts.items()},
            "convention": str(ep.convention),
            "device": str(placement.device),
            "precision": str(placement.precision),
            "test_fingerprint": fingerprint,
            "mlflow_run": record.run_id,
        }
        write_json(out / "summary.json", summary)
        context = {
            "test pairs": ", ".join(f"{k}: {n}" for k, n in counts.items())
            + f" (split == test in {paths.index.relative_to(paths.root)})",
            "metric convention": str(ep.convention),
            "model": f"{paths.model.relative_to(paths.root)} (MLflow run {run_info['run_id']})",
            "evaluation run": record.run_id,
            "precision": f"{placement.precision} (evaluate.precision: {ep.precision})",
            "references": ", ".join(references) + " (the authors' trained model, same split)"
            if references
            else "none",
            "published references": ", ".join(f"{v.method} on {v.key} ({len(v.fused)} pairs)"
                                              for v in views) or "none",
        }  # fmt: skip
        write_report(
            out / "report.md", means, METRIC_DIRECTION, context, scores.gallery,
            scores.mean_seconds(), report_notes(list(test["dataset"].unique()), views),
        )  # fmt: skip
        _swap(out, paths.evaluation)
        model_means = {s: {k: clean(v) for k, v in m[MODEL_NAME].items()} for s, m in means.items()}
        others = {
            s: {
                name.replace(REFERENCE_MARK, "_reference"): {k: clean(v) for k, v in m.items()}
                for name, m in methods_.items()
                if name != MODEL_NAME
            }
            for s, methods_ in means.items()
        }
        write_json(paths.metrics, model_means)
        write_json(paths.comparison, others)
        record.log(means, MODEL_NAME, test, per_image, paths.evaluation,
                   {names.EVAL_SPLIT_FINGERPRINT: fingerprint})  # fmt: skip
    write_json(paths.evaluation_run, {"run_id": record.run_id, "test_fingerprint": fingerprint})
    return means


if __name__ == "__main__":
    stage_main(run, __doc__.splitlines()[0])
