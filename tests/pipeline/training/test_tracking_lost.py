"""The MLflow store lost in the middle of training (a tracking server that went away): training
finishes, the checkpoint is kept and says so, the stage fails with one line, and the next run
finishes the same MLflow run from the checkpoint without retraining."""

from __future__ import annotations

import os

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from pipeline.core.paths import ProjectPaths
from pipeline.stages import train
from pipeline.tracking.training_run import FAIL_FAST
from pipeline.training import checkpoint
from pipeline.training.trainer import TrackingLostError
from tests.helpers.patches import write_patches


@pytest.fixture
def project(tmp_path, tracking_env, monkeypatch):
    for name in FAIL_FAST:  # the trainer sets them once the store is lost: undone after
        monkeypatch.delenv(name, raising=False)
    write_patches(tmp_path / "data" / "patches.h5")
    return ProjectPaths(tmp_path)


def _store_back() -> None:
    """The store answers again: a new process would not inherit the fail-fast settings."""
    for name in FAIL_FAST:
        os.environ.pop(name, None)


def _server_gone_after(calls: int, monkeypatch) -> None:
    """``mlflow.log_metrics`` answers ``calls`` step-loss calls, then fails as MLflow does once
    its retries against a dead server are spent."""
    real, count = mlflow.log_metrics, {"n": 0}

    def log_metrics(metrics, *args, **kwargs):
        count["n"] += "train/loss" in metrics
        if count["n"] > calls:
            raise MlflowException("API request to http://tracking/api failed: Connection refused")
        return real(metrics, *args, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", log_metrics)


def test_training_goes_on_and_the_next_run_logs_what_was_missed(
    project, tiny_params, monkeypatch, capsys
):
    with monkeypatch.context() as patch:
        _server_gone_after(2, patch)  # steps 1 and 2 logged, then the server is gone
        with pytest.raises(TrackingLostError, match=r"lost at step \d+ .*dvc repro") as caught:
            train.run(tiny_params(), project)
    _store_back()
    assert "\n" not in str(caught.value)
    assert "training goes on" in capsys.readouterr().out
    kept = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert kept["epoch"] == 2 and kept["tracking_lost"]["step"] >= 3  # all epochs trained
    run_id = kept["run_id"]
    assert mlflow.get_run(run_id).info.status != "FINISHED"
    assert not project.run_info.exists()  # the later stages have nothing to attach to

    record = train.run(tiny_params(), project)
    out = capsys.readouterr().out
    assert "lost the store" in out and "logged" in out
    assert record["run_id"] == run_id  # the same run, finished
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED" and "store lost from step" in run.data.tags["tracking_gap"]
    history = mlflow.MlflowClient().get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # nothing missing, nothing twice
    epochs = mlflow.MlflowClient().get_metric_history(run_id, "train_epoch/loss")
    assert sorted(m.step for m in epochs) == [1, 2]
    final = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert final["step"] == kept["step"]  # no step was trained again


def test_a_store_lost_while_the_model_is_logged_marks_the_checkpoint(
    project, tiny_params, monkeypatch
):
    def log_model(*args, **kwargs):
        raise MlflowException("API request to http://tracking/api failed: Connection refused")

    with monkeypatch.context() as patch:
        patch.setattr("pipeline.tracking.pyfunc_model.log_model", log_model)
        with pytest.raises(TrackingLostError, match="lost at step 4"):
            train.run(tiny_params(), project)
    _store_back()
    kept = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert kept["tracking_lost"]["step"] == 4
    record = train.run(tiny_params(), project)
    assert record["run_id"] == kept["run_id"]
    assert mlflow.get_run(record["run_id"]).info.status == "FINISHED"


def test_a_store_lost_at_an_epoch_end_replays_that_epoch_and_no_step_twice(
    project, tiny_params, monkeypatch
):
    real = mlflow.log_metrics

    def log_metrics(metrics, *args, **kwargs):
        if "train_epoch/loss" in metrics:  # the first epoch's means: the server is gone
            raise MlflowException("API request to http://tracking/api failed: Connection refused")
        return real(metrics, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(mlflow, "log_metrics", log_metrics)
        with pytest.raises(TrackingLostError, match="lost at step 3"):
            train.run(tiny_params(), project)
    _store_back()
    kept = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert kept["tracking_lost"]["step"] == 3 and kept["tracking_lost"]["epoch"] == 1
    record = train.run(tiny_params(), project)
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(record["run_id"], "train/loss")]
    assert sorted(steps) == [1, 2, 3, 4]
    epochs = [m.step for m in client.get_metric_history(record["run_id"], "train_epoch/loss")]
    assert sorted(epochs) == [1, 2]
