"""The training's MLflow run (rank 0 only): params, tags, data inputs and the lineage files at
the start, losses while training, then the model and ``artifacts/train_run.json`` naming the
run for the later stages. Nothing is written to the run after training ends: evaluations get
runs of their own (:mod:`pipeline.tracking.evaluation_run`), the registry tags the version."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.exceptions import MlflowException

from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import Placement
from pipeline.tracking import experiment as tracking
from pipeline.tracking import names, pyfunc_model
from pipeline.tracking.provenance import git_state
from pipeline.tracking.run_record import write_run_info
from pipeline.tracking.store_health import mark_stale_runs, owner_tags


class RunTracker:
    """One MLflow run per training, continued (same run id) when training resumes."""

    def __init__(
        self,
        params: Params,
        paths: ProjectPaths,
        placement: Placement,
        world_size: int = 1,
        run_id: str | None = None,
    ) -> None:
        self.params = params
        self.paths = paths
        self.placement = placement
        self.world_size = world_size
        self.run_id = run_id
        self.experiment_id = ""
        self.uri = ""

    def start(self, params_digest: str, resumed_epoch: int | None = None) -> None:
        """Open (or reopen) the run and record params, tags, data inputs and lineage files."""
        self.experiment_id = tracking.setup_experiment(self.params, self.paths.root)
        self.uri = mlflow.get_tracking_uri()
        reopen = self.run_id is not None and self._run_exists(self.run_id)
        if reopen:
            mlflow.start_run(run_id=self.run_id, log_system_metrics=True)
        else:
            run = mlflow.start_run(
                experiment_id=self.experiment_id,
                run_name=f"train {self.params.model.vgg_weights}-vgg",
                log_system_metrics=True,
            )
            self.run_id = run.info.run_id
            mlflow.log_params(tracking.flatten_params(self.params))
            tracking.log_data_inputs(self.paths.dvc_lock, self.paths.root)
            self._log_lineage_files()
        commit, dirty = git_state(self.paths.root)
        mlflow.set_tags(
            {
                names.RUN_KIND: "training",
                names.GIT_COMMIT: commit,
                names.GIT_DIRTY: str(dirty).lower(),
                names.DEVICE: str(self.placement.device),
                names.PRECISION: str(self.placement.precision),
                names.WORLD_SIZE: str(self.world_size),
                names.TRAIN_DIGEST: params_digest,
                **owner_tags(self.paths.root),
            }
        )
        if resumed_epoch is not None:
            mlflow.set_tag(names.RESUMED_FROM, str(resumed_epoch))
        for stale in mark_stale_runs(self.uri, self.paths.root, f"run {self.run_id}"):
            print(f"marked MLflow run {stale} KILLED: its process is gone", flush=True)

    def _log_lineage_files(self) -> None:
        """The data and mask indexes, ``dvc.lock`` and ``params.yaml`` as the run read them,
        under ``lineage/`` (``coconet lineage`` shows them after the local data is gone)."""
        files = {
            "raw_index.csv": self.paths.index,
            "masks_index.csv": self.paths.masks_index,
            "dvc.lock": self.paths.dvc_lock,
            "params.yaml": self.paths.params,
        }
        with tempfile.TemporaryDirectory() as tmp:
            for name, source in files.items():
                if source.is_file():
                    shutil.copyfile(source, Path(tmp) / name)
            mlflow.log_artifacts(tmp, names.LINEAGE_ARTIFACTS)

    @staticmethod
    def _run_exists(run_id: str) -> bool:
        try:
            mlflow.get_run(run_id)
        except MlflowException:
            return False
        return True

    def log_step(self, step: int, terms: Mapping[str, float]) -> None:
        """Per-step loss terms (every ``train.log_every`` steps)."""
        metrics = {names.step_metric(name): float(v) for name, v in terms.items()}
        mlflow.log_metrics(metrics, step=step)

    def log_epoch(
        self, epoch: int, phase: int, means: Mapping[str, float], patches_per_s: float
    ) -> None:
        """Per-epoch mean loss terms and throughput."""
        metrics = {names.epoch_metric(name): float(v) for name, v in means.items()}
        metrics[names.epoch_metric("phase")] = float(phase)
        metrics[names.epoch_metric("patches_per_s")] = patches_per_s
        mlflow.log_metrics(metrics, step=epoch)

    def finish(self, model: torch.nn.Module, loss_csv: Path, params_digest: str) -> dict[str, Any]:
        """Log the loss CSV and the MLflow model (safetensors weights, loaded by
        :mod:`pipeline.tracking.pyfunc_model`, never unpickled); write ``train_run.json``."""
        mlflow.log_artifact(str(loss_csv), names.TRAINING_ARTIFACTS)
        config = {
            "vgg_weights": self.params.model.vgg_weights,
            "train_precision": str(self.placement.precision),
            "params_digest": params_digest,
            "run_id": self.run_id,
        }
        info = pyfunc_model.log_model(model, config, names.MODEL_ARTIFACT)
        record = {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.uri,
            "model_uri": info.model_uri,
            "model_id": info.model_id,
            "run_model_uri": f"runs:/{self.run_id}/{names.MODEL_ARTIFACT}",
            "params_digest": params_digest,
            "vgg_weights": self.params.model.vgg_weights,
            "precision": str(self.placement.precision),
            "git_commit": git_state(self.paths.root)[0],
        }
        write_run_info(record, self.paths.run_info)
        mlflow.end_run()
        return record

    def fail(self, reason: str | None = None) -> None:
        """Mark the run failed, with ``reason`` as its ``failure`` tag (a resumed training
        reopens it)."""
        if mlflow.active_run() is not None:
            if reason:
                mlflow.set_tag(names.FAILURE, reason[:5000])
            mlflow.end_run(status="FAILED")
