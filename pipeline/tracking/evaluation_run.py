"""The evaluation's record in MLflow: the means per method, the test split as a dataset input
and the report files, on the training's run."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import mlflow
import pandas as pd

from pipeline.core.paths import ProjectPaths
from pipeline.tracking.experiment import attach_uri

MODEL_METHOD = "CoCoNet"
REFERENCE_MARK = " (reference)"


def metric_names(means: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``eval_<metric>`` for the model, ``eval_<method>_<metric>`` for the others (references
    as ``<name>_reference``); undefined (NaN) means left out."""
    metrics = {}
    for method, values in means.items():
        slug = method.removesuffix(REFERENCE_MARK) + (
            "_reference" if REFERENCE_MARK in method else ""
        )
        prefix = "eval_" if method == MODEL_METHOD else f"eval_{slug}_"
        metrics.update({prefix + k: v for k, v in values.items() if not math.isnan(v)})
    return metrics


def log_evaluation(
    run_info: dict[str, Any],
    paths: ProjectPaths,
    means: Mapping[str, Mapping[str, float]],
    test: pd.DataFrame,
) -> None:
    """Attach the evaluation to the training run: metrics, artifacts and the test split."""
    mlflow.set_tracking_uri(attach_uri(run_info, paths.root))
    with mlflow.start_run(run_id=run_info["run_id"]):
        mlflow.log_metrics(metric_names(means))
        with warnings.catch_warnings():  # "" and "file" schemes both map to the local source
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                test.reset_index(drop=True), source=str(paths.index), name="test split"
            )
        mlflow.log_input(dataset, context="evaluation")
        mlflow.log_artifacts(str(paths.evaluation), "evaluation")
        mlflow.log_artifact(str(paths.metrics), "evaluation")
