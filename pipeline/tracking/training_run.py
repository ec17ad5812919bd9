"""The training's MLflow run (rank 0 only): params, tags, data inputs and the lineage files at
the start, losses while training, then the model and ``artifacts/train_run.json`` naming the
run for the later stages. Nothing is written to the run after training ends: evaluations get
runs of their own (:mod:`pipeline.tracking.evaluation_run`), the registry tags the version."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import requests
import torch
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from models.contrast import contrast_entry
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import Placement
from pipeline.tracking import experiment as tracking
from pipeline.tracking import names, pyfunc_model
from pipeline.tracking.provenance import git_state
from pipeline.tracking.run_record import write_run_info
from pipeline.tracking.store_health import mark_stale_runs, owner_tags

TRACKING_ERRORS = (MlflowException, requests.RequestException, OSError)
BATCH = 1000  # metrics per log_batch call (MLflow's limit)
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class RunTracker:
    """One MLflow run per training, continued (same run id) when training resumes.

    The store lost while training (a tracking server that went away): the losses stop being
    logged, training goes on, and :attr:`lost` (``{"step", "reason"}``) goes into each
    checkpoint; the trainer ends with :class:`~pipeline.core.errors.TrackingLostError`. The next
    run reopens the run and logs what was missed from the checkpoint's history (:meth:`replay`).
    """

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
        self.lost: dict[str, Any] | None = None
        self.last_step = 0  # the last step whose losses were logged

    def lose(self, step: int, exc: BaseException, epoch: int | None = None) -> None:
        """Stop logging: the store is gone (``exc``) from ``step`` on (and from ``epoch``'s
        means on, when the epoch's own logging failed)."""
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        self.lost = {"step": step, "reason": reason}
        if epoch is not None:
            self.lost["epoch"] = epoch
        os.environ.update(FAIL_FAST)  # later calls (system metrics, exit) must not hang
        print(
            f"MLflow store lost at step {step} ({reason}): training goes on; the losses stay "
            "in the checkpoints and are logged to this run when the store is back",
            flush=True,
        )

    def _log(self, metrics: dict[str, float], step: int, epoch: int | None = None) -> bool:
        """Log ``metrics`` at ``step`` (``epoch`` for an epoch's means) unless the store is
        lost; whether they were logged."""
        if self.lost is not None:
            return False
        try:
            mlflow.log_metrics(metrics, step=epoch if epoch is not None else step)
        except TRACKING_ERRORS as exc:
            self.lose(step, exc, epoch)
            return False
        return True

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
        if self._log(metrics, step):
            self.last_step = step

    def log_epoch(
        self, epoch: int, phase: int, means: Mapping[str, float], patches_per_s: float
    ) -> None:
        """Per-epoch mean loss terms and throughput."""
        metrics = {names.epoch_metric(name): float(v) for name, v in means.items()}
        metrics[names.epoch_metric("phase")] = float(phase)
        metrics[names.epoch_metric("patches_per_s")] = patches_per_s
        self._log(metrics, self.last_step + 1, epoch)  # its steps were all logged

    def replay(
        self, history: list[list[float]], terms: list[str], log_every: int, lost: dict[str, Any]
    ) -> int:
        """Log the step losses (every ``log_every`` steps) and epoch means a lost store
        missed, from the checkpoint's ``history`` rows ``[step, epoch, phase, *terms]``; tag
        the run with the gap; returns the number of metrics logged."""
        first = int(lost["step"])
        metrics: list[Metric] = []
        now = int(time.time() * 1000)
        epochs: dict[int, list[list[float]]] = {}
        for step, epoch, phase, *values in history:
            epochs.setdefault(int(epoch), []).append([phase, *values])
            if step >= first and int(step) % log_every == 0:
                for name, value in zip(terms, values, strict=True):
                    metrics.append(Metric(names.step_metric(name), value, now, int(step)))
        first_epoch = lost.get("epoch") or min(
            (int(e) for s, e, *_ in history if s >= first), default=None
        )
        for epoch, rows in epochs.items():
            if first_epoch is None or epoch < first_epoch:
                continue
            means = torch.tensor(rows, dtype=torch.float64).mean(dim=0).tolist()
            metrics.append(Metric(names.epoch_metric("phase"), rows[0][0], now, epoch))
            for name, value in zip(terms, means[1:], strict=True):
                metrics.append(Metric(names.epoch_metric(name), value, now, epoch))
        client = mlflow.MlflowClient()
        for start in range(0, len(metrics), BATCH):
            client.log_batch(self.run_id, metrics=metrics[start : start + BATCH])
        mlflow.set_tag(
            names.TRACKING_GAP,
            f"store lost from step {first} ({lost['reason']}); those losses were logged from "
            "the checkpoint after training",
        )
        return len(metrics)

    def finish(self, model: torch.nn.Module, loss_csv: Path, params_digest: str) -> dict[str, Any]:
        """Log the loss CSV and the MLflow model (safetensors weights, loaded by
        :mod:`pipeline.tracking.pyfunc_model`, never unpickled); write ``train_run.json``."""
        mlflow.log_artifact(str(loss_csv), names.TRAINING_ARTIFACTS)
        config = {
            "vgg_weights": self.params.model.vgg_weights,
            "output_contrast": contrast_entry(model),
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
        if mlflow.active_run() is None:
            return
        if self.lost is not None:  # one fast try; the next training run finishes the run
            with contextlib.suppress(*TRACKING_ERRORS):
                mlflow.end_run(status="FAILED")
            return
        if reason:
            mlflow.set_tag(names.FAILURE, reason[:5000])
        mlflow.end_run(status="FAILED")
