"""The training's MLflow run (rank 0 only): params, tags, data inputs, losses, the model, and
``artifacts/train_run.json`` naming the run for the later stages."""

from __future__ import annotations

import importlib.metadata
import os
import socket
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
from pipeline.tracking import pyfunc_model
from pipeline.tracking.provenance import git_state, git_tags
from pipeline.tracking.run_record import write_run_info

MODEL_ARTIFACT = "model"
ROOT_TAG, HOST_TAG, PID_TAG = "project_root", "train_host", "train_pid"  # the run's owner


def _pip_requirements() -> list[str]:
    """The packages the logged model needs, pinned to the versions installed here."""
    pins = []
    for name in ("torch", "torchvision", "numpy", "safetensors", "pandas", "pillow"):
        version = importlib.metadata.version(name).split("+")[0]
        pins.append(f"{name}=={version}")
    return pins


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
        """Open (or reopen) the run and record params, tags and data inputs."""
        self.experiment_id = tracking.setup_experiment(self.params, self.paths.root)
        self.uri = mlflow.get_tracking_uri()
        reopen = self.run_id is not None and self._run_exists(self.run_id)
        if reopen:
            mlflow.start_run(run_id=self.run_id, log_system_metrics=True)
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, log_system_metrics=True)
            self.run_id = run.info.run_id
            mlflow.log_params(tracking.flatten_params(self.params))
            tracking.log_data_inputs(self.paths.dvc_lock, self.paths.root)
        mlflow.set_tags(
            {
                **git_tags(self.paths.root),
                "vgg_weights": self.params.model.vgg_weights,
                "device": str(self.placement.device),
                "precision": str(self.placement.precision),
                "world_size": str(self.world_size),
                "params_digest": params_digest,
                **self._owner_tags(),
            }
        )
        if resumed_epoch is not None:
            mlflow.set_tag("resumed_from_epoch", str(resumed_epoch))
        for stale in self._kill_stale_runs():
            print(f"marked MLflow run {stale} KILLED: its training process is gone", flush=True)

    def _owner_tags(self) -> dict[str, str]:
        """Which training process owns the run: project root, host and process id."""
        return {
            ROOT_TAG: str(self.paths.root.resolve()),
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
        }

    def _kill_stale_runs(self) -> list[str]:
        """Mark KILLED the runs of this experiment and project root still RUNNING although
        their process is gone (a training killed before it could mark its run); returns
        their ids. A run of a live process on this host is left alone."""
        client = mlflow.MlflowClient()
        owner = self._owner_tags()
        killed = []
        for run in client.search_runs(
            [self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000
        ):
            tags = run.data.tags
            if run.info.run_id == self.run_id or tags.get(ROOT_TAG) != owner[ROOT_TAG]:
                continue
            pid = tags.get(PID_TAG, "")
            if tags.get(HOST_TAG) == owner[HOST_TAG] and pid != owner[PID_TAG] and _alive(pid):
                continue
            client.set_tag(run.info.run_id, "killed_reason", f"stale: found by run {self.run_id}")
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
        return killed

    @staticmethod
    def _run_exists(run_id: str) -> bool:
        try:
            mlflow.get_run(run_id)
        except MlflowException:
            return False
        return True

    def log_step(self, step: int, terms: Mapping[str, float]) -> None:
        """Per-step loss terms (every ``train.log_every`` steps)."""
        mlflow.log_metrics({f"step_{name}": float(v) for name, v in terms.items()}, step=step)

    def log_epoch(
        self, epoch: int, phase: int, means: Mapping[str, float], patches_per_s: float
    ) -> None:
        """Per-epoch mean loss terms and throughput."""
        metrics = {f"epoch_{name}": float(v) for name, v in means.items()}
        metrics.update({"phase": float(phase), "patches_per_s": patches_per_s})
        mlflow.log_metrics(metrics, step=epoch)

    def finish(self, model: torch.nn.Module, loss_csv: Path, params_digest: str) -> dict[str, Any]:
        """Log the loss CSV and the MLflow model (safetensors weights, loaded by
        :mod:`pipeline.tracking.pyfunc_model`, never unpickled); write ``train_run.json``."""
        mlflow.log_artifact(str(loss_csv), "training")
        config = {
            "vgg_weights": self.params.model.vgg_weights,
            "train_precision": str(self.placement.precision),
            "params_digest": params_digest,
            "run_id": self.run_id,
        }
        info = pyfunc_model.log_model(model, config, _pip_requirements(), MODEL_ARTIFACT)
        record = {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.uri,
            "model_uri": info.model_uri,
            "run_model_uri": f"runs:/{self.run_id}/{MODEL_ARTIFACT}",
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
                mlflow.set_tag("failure", reason[:5000])
            mlflow.end_run(status="FAILED")


def _alive(pid: str) -> bool:
    """Whether a process with this id runs on this host (True where that cannot be told)."""
    if os.name != "posix":
        return True
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
