"""What the train stage records (rank 0 only): the MLflow run, the loss CSV, the model files
and ``artifacts/train_run.json``."""

from __future__ import annotations

import csv
import importlib.metadata
import os
import socket
from typing import TYPE_CHECKING, Any

import torch

from pipeline.core.imageio import atomic_path
from pipeline.core.params import Params
from pipeline.tracking import experiment as tracking
from pipeline.tracking import pyfunc_model
from pipeline.training.checkpoint import params_digest

if TYPE_CHECKING:
    from pipeline.core.paths import ProjectPaths
    from pipeline.training.distributed import Runtime

MODEL_ARTIFACT = "model"
ROOT_TAG, HOST_TAG, PID_TAG = "project_root", "train_host", "train_pid"  # the run's owner
LOSS_NAMES = ("loss", "adaptive", "contrastive", "ssim", "mse")
HISTORY_COLUMNS = ("step", "epoch", "phase", *LOSS_NAMES)


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
        runtime: Runtime,
        run_id: str | None = None,
        precision: str = "fp32",
    ) -> None:
        self.params = params
        self.precision = precision
        self.paths = paths
        self.runtime = runtime
        self.run_id = run_id
        self.experiment_id = ""
        self.uri = ""

    def start(self, resumed_epoch: int | None = None) -> None:
        """Open (or reopen) the run and record params, tags and data inputs."""
        import mlflow

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
                **tracking.git_tags(self.paths.root),
                "vgg_weights": self.params.model.vgg_weights,
                "device": str(self.runtime.device),
                "precision": self.precision,
                "world_size": str(self.runtime.world_size),
                "params_digest": params_digest(self.params),
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
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
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
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            mlflow.get_run(run_id)
        except MlflowException:
            return False
        return True

    def log_step(self, step: int, losses: torch.Tensor) -> None:
        """Per-step losses (every ``train.log_every`` steps)."""
        import mlflow

        mlflow.log_metrics(
            {f"step_{name}": float(v) for name, v in zip(LOSS_NAMES, losses, strict=True)},
            step=step,
        )

    def log_epoch(self, epoch: int, phase: int, means: list[float], patches_per_s: float) -> None:
        """Per-epoch mean losses and throughput."""
        import mlflow

        metrics = {f"epoch_{name}": v for name, v in zip(LOSS_NAMES, means, strict=True)}
        metrics.update({"phase": float(phase), "patches_per_s": patches_per_s})
        mlflow.log_metrics(metrics, step=epoch)

    def finish(self, model: torch.nn.Module, history: list[list[float]]) -> dict[str, Any]:
        """Write the loss CSV, ``model.pt``, the MLflow model (safetensors weights, loaded by
        :mod:`pipeline.tracking.pyfunc_model`, never unpickled) and ``train_run.json``."""
        import mlflow

        self._write_loss_csv(history)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        payload = {
            "state_dict": state,
            "vgg_weights": self.params.model.vgg_weights,
            "precision": self.precision,
            "params": self.params.model_dump(mode="json", by_alias=True),
        }
        with atomic_path(self.paths.model) as tmp:
            torch.save(payload, tmp)
        mlflow.log_artifact(str(self.paths.loss_csv), "training")
        config = {
            "vgg_weights": self.params.model.vgg_weights,
            "train_precision": self.precision,
            "params_digest": params_digest(self.params),
            "run_id": self.run_id,
        }
        info = pyfunc_model.log_model(model, config, _pip_requirements(), MODEL_ARTIFACT)
        record = {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.uri,
            "model_uri": info.model_uri,
            "run_model_uri": f"runs:/{self.run_id}/{MODEL_ARTIFACT}",
            "params_digest": params_digest(self.params),
            "vgg_weights": self.params.model.vgg_weights,
            "precision": self.precision,
            "git_commit": tracking.git_state(self.paths.root)[0],
        }
        tracking.write_run_info(record, self.paths.run_info)
        mlflow.end_run()
        return record

    def _write_loss_csv(self, history: list[list[float]]) -> None:

        with atomic_path(self.paths.loss_csv) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HISTORY_COLUMNS)
            for step, epoch, phase, *losses in history:
                writer.writerow([int(step), int(epoch), int(phase), *(f"{v:.6g}" for v in losses)])

    def fail(self, reason: str | None = None) -> None:
        """Mark the run failed, with ``reason`` as its ``failure`` tag (a resumed training
        reopens it)."""
        import mlflow

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
