"""Each evaluation's own MLflow run: nested under the training run it scored, linked to that
run's logged model, with the test split as an input dataset. The training run itself is never
written to after training ends.

What the run holds: the ``evaluate`` params; every method's means per test set as metrics
``eval/<test set>/<method>/<metric>`` (the model's also on the logged model, per test set
as the dataset); the per-image scores as an MLflow table; the gallery as MLflow images; the
report folder as artifacts under ``evaluation/``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import LoggedModelInput
from PIL import Image

from pipeline.core.params import Params
from pipeline.tracking import names
from pipeline.tracking.experiment import attach_uri, flatten_params
from pipeline.tracking.store_health import owner_tags

Means = Mapping[str, Mapping[str, Mapping[str, float]]]  # test set -> method -> metric -> mean


def model_id_of(run_info: Mapping[str, Any]) -> str | None:
    """The logged model's id from ``train_run.json`` (``models:/m-...`` in older records)."""
    if run_info.get("model_id"):
        return str(run_info["model_id"])
    uri = str(run_info.get("model_uri", ""))
    return uri.removeprefix("models:/") if uri.startswith("models:/m-") else None


def metric_key(method: str) -> str:
    """A method's name as a metric-key segment: ``official (reference)`` -> ``official_ref``."""
    return method.replace(" (reference)", "_reference").replace(" ", "_")


class EvaluationRun:
    """``with EvaluationRun(...) as run:`` opens the run (FAILED if the block raises)."""

    def __init__(self, run_info: Mapping[str, Any], root: Path, params: Params, name: str) -> None:
        self.run_info = run_info
        self.root = root
        self.params = params
        self.name = name
        self.run_id = ""
        self.model_id = model_id_of(run_info)

    def __enter__(self) -> EvaluationRun:
        attach_uri(dict(self.run_info), self.root)
        training = mlflow.get_run(self.run_info["run_id"])
        run = mlflow.start_run(
            experiment_id=training.info.experiment_id,
            parent_run_id=training.info.run_id,
            run_name=self.name,
        )
        self.run_id = run.info.run_id
        section = {k: v for k, v in flatten_params(self.params).items() if k.startswith("eval")}
        mlflow.log_params(section)
        mlflow.set_tags({names.RUN_KIND: "evaluation", **owner_tags(self.root)})
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is not None:
            mlflow.set_tag(names.FAILURE, str(error)[:5000] or kind.__name__)
        mlflow.end_run(status="FAILED" if error is not None else "FINISHED")

    def log(
        self,
        means: Means,
        model_method: str,
        test: pd.DataFrame,
        per_image: pd.DataFrame,
        folder: Path,
        tags: Mapping[str, str],
    ) -> None:
        """Record an evaluation: test split, means, per-image table, gallery, report files."""
        mlflow.set_tags(dict(tags))
        datasets = {}
        for test_set, rows in test.groupby("dataset", sort=False):
            with warnings.catch_warnings():  # "" and "file" schemes both name a local source
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(
                    rows.reset_index(drop=True), source=str(self.root), name=str(test_set)
                )
            model = LoggedModelInput(self.model_id) if self.model_id else None
            mlflow.log_input(dataset, context="evaluation", model=model)
            datasets[str(test_set)] = dataset
        for test_set, methods in means.items():
            for method, values in methods.items():
                metrics = {
                    names.eval_metric(f"{test_set}/{metric_key(method)}", k): v
                    for k, v in values.items()
                    if not math.isnan(v)
                }
                linked = method == model_method and self.model_id
                mlflow.log_metrics(
                    metrics,
                    model_id=self.model_id if linked else None,
                    dataset=datasets.get(test_set) if linked else None,
                )
        mlflow.log_table(per_image, names.EVAL_TABLE)
        for strip in sorted((folder / "gallery").glob("*.png")):
            with Image.open(strip) as image:
                mlflow.log_image(image.convert("RGB"), key=names.gallery_key(strip.stem),
                                 step=0, synchronous=True)  # fmt: skip
        mlflow.log_artifacts(str(folder), names.EVAL_ARTIFACTS)
