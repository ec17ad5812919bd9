"""A copied or moved project with the embedded MLflow store (absolute artifact paths) refuses
every MLflow use (train, evaluate/register, fuse, lineage) and never touches the original."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.params import load_params
from pipeline.core.paths import ProjectPaths
from pipeline.inference import ModelLoadError, load_fusion_model
from pipeline.stages import register as reg
from pipeline.tracking import experiment, pyfunc_model
from pipeline.tracking.experiment import StoreError
from pipeline.tracking.run_record import write_run_info
from tests.helpers.models import CPU_FP32
from tests.helpers.registry import log_evaluation_run, make_project

METRICS = {"VIF": 0.6, "Qabf": 0.5, "SSIM": 0.7}


@pytest.fixture
def original(tmp_path, monkeypatch) -> Path:
    """A project with the embedded store (mlflow.db + mlartifacts/) and a registered model."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = make_project(tmp_path / "original", METRICS)
    (root / "dvc.yaml").write_text("stages: {}\n")  # a project: its dvc.yaml marks the root
    params = load_params(root / "params.yaml")
    experiment_id = experiment.setup_experiment(params, root)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        config = {"vgg_weights": "random", "params_digest": params.digest()}
        info = pyfunc_model.log_model(torch.nn.Linear(2, 1), config)
    record = {"run_id": run.info.run_id, "tracking_uri": mlflow.get_tracking_uri()}
    record.update(model_uri=info.model_uri, model_id=info.model_id, experiment_id=experiment_id)
    write_run_info(record, root / "artifacts/train_run.json")
    log_evaluation_run(root, record, json.loads((root / "reports/metrics.json").read_text()))
    reg.run(params, ProjectPaths(root))
    assert (root / "mlflow.db").is_file() and (root / "mlartifacts").is_dir()
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the sha256 of its bytes ("dir" for folders)."""
    return {
        p.relative_to(root).as_posix(): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
    }


def refusals(project: Path, monkeypatch) -> dict[str, str]:
    """The error of each MLflow use in ``project``: lineage, fuse, register, train."""
    params = load_params(project / "params.yaml")
    out = {}
    lineage = CliRunner().invoke(app, ["lineage", "--root", str(project)])
    assert lineage.exit_code == 1, lineage.output
    out["lineage"] = lineage.output
    with pytest.raises(ModelLoadError) as fuse:  # the copy's fuse: the copy's store
        load_fusion_model("models:/coconet@champion", CPU_FP32, project)
    out["fuse"] = str(fuse.value)
    with pytest.raises(StoreError) as register:  # evaluate attaches the same way
        reg.run(params, ProjectPaths(project))
    out["register"] = str(register.value)
    with pytest.raises(StoreError) as train:
        experiment.setup_experiment(params, project)
    out["train"] = str(train.value)
    return out


def test_a_copy_refuses_and_leaves_the_original_untouched(original, tmp_path, monkeypatch):
    ok = CliRunner().invoke(app, ["lineage", "--root", str(original)])
    assert ok.exit_code == 0 and "coconet v1" in ok.output, ok.output
    before = snapshot(original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)

    errors = refusals(copy, monkeypatch)
    for use in ("lineage", "fuse", "train"):
        assert f"keeps its artifacts in {original / 'mlartifacts'}" in errors[use], errors[use]
        assert f"outside this project ({copy})" in errors[use]
        assert "start a fresh store here" in errors[use]
    assert "artifacts/train_run.json: the training run was recorded in" in errors["register"]
    assert f"{original / 'mlflow.db'}, the store of {original}" in errors["register"]
    assert snapshot(original) == before

    # the way out the message gives (a new process, as a user would run it): a fresh store in
    # the copy is self-contained
    (copy / "mlflow.db").unlink()
    shutil.rmtree(copy / "mlartifacts")
    script = (
        "import sys, mlflow; from pathlib import Path; from pipeline.core.params import "
        "load_params; from pipeline.tracking.experiment import setup_experiment; "
        "root = Path(sys.argv[1]); params = load_params(root / 'params.yaml'); "
        "print(mlflow.get_experiment(setup_experiment(params, root)).artifact_location)"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    fresh = subprocess.run(
        [sys.executable, "-c", script, str(copy)], env=env, capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert fresh.stdout.strip().splitlines()[-1] == (copy / "mlartifacts").as_uri()
    assert snapshot(original) == before


def test_a_moved_project_refuses_and_recreates_nothing(original, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.move(original, moved)
    errors = refusals(moved, monkeypatch)
    assert f"outside this project ({moved})" in errors["fuse"]
    assert f"{original / 'mlflow.db'}, which no longer exists" in errors["register"]
    assert not original.exists()
