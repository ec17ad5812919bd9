"""MLflow tracking setup: store location, experiment creation, data inputs, run records."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from pipeline.core.params import Params
from pipeline.tracking import experiment as tracking


def test_relative_sqlite_uri_is_anchored_at_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.resolve_tracking_uri("sqlite:///mlflow.db", tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert tracking.resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert tracking.resolve_tracking_uri("runs", tmp_path) == (tmp_path / "runs").as_uri()


def test_environment_uri_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == (
        "http://127.0.0.1:5000"
    )


def test_experiment_created_once_with_artifact_location(tmp_path, mlflow_store, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    params = Params.model_validate(
        {"tracking": {"experiment": "exp-create", "artifact_root": "arts"}}
    )
    first = tracking.setup_experiment(params, tmp_path)
    second = tracking.setup_experiment(params, tmp_path)
    assert first == second
    experiment = mlflow.get_experiment(first)
    assert experiment.name == "exp-create"
    assert experiment.artifact_location == (tmp_path / "arts").resolve().as_uri()


def test_flatten_params_covers_every_section():
    flat = tracking.flatten_params(Params())
    sections = {key.split(".")[0] for key in flat}
    assert sections == {
        "tracking",
        "download",
        "model",
        "masks",
        "patches",
        "train",
        "evaluate",
        "register",
    }
    assert flat["train.lr"] == "0.0001"
    assert json.loads(flat["download.datasets"]) == ["tno40", "tno_masked", "roadscene", "m3fd"]


def test_data_inputs_carry_dvc_lock_hashes(tmp_path, mlflow_store, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    lock = {
        "schema": "2.0",
        "stages": {
            "download": {"outs": [{"path": "data/raw", "md5": "aaa.dir", "nfiles": 3}]},
            "masks": {"outs": [{"path": "data/masks", "md5": "bbb.dir"}]},
            "patches": {"outs": [{"path": "data/patches.h5", "md5": "ccc", "size": 10}]},
            "train": {"outs": [{"path": "artifacts/model.pt", "md5": "ddd"}]},
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    params = Params.model_validate({"tracking": {"experiment": "exp-inputs"}})
    tracking.setup_experiment(params, tmp_path)
    with mlflow.start_run() as run:
        logged = tracking.log_data_inputs(tmp_path / "dvc.lock", tmp_path)
    assert {o["md5"] for o in logged} == {"aaa.dir", "bbb.dir", "ccc"}
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    digests = {i.dataset.name: i.dataset.digest for i in inputs}
    assert digests == {"data/raw": "aaa.dir", "data/masks": "bbb.dir", "data/patches.h5": "ccc"}
    contexts = {t.value for i in inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"training"}


def test_no_dvc_lock_logs_no_inputs(tmp_path):
    assert tracking.log_data_inputs(tmp_path / "dvc.lock", tmp_path) == []


def test_connect_refuses_a_missing_store_and_allows_a_configured_outside_artifact_root(
    tmp_path, monkeypatch
):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "proj"
    root.mkdir()
    with pytest.raises(tracking.StoreError, match="no MLflow store here"):
        tracking.connect(root)
    assert list(root.iterdir()) == []
    shared = (tmp_path / "shared-artifacts").as_uri()  # an explicit choice, not a copy
    params = Params.model_validate({"tracking": {"experiment": "e", "artifact_root": shared}})
    experiment_id = tracking.setup_experiment(params, root)
    assert (root / "mlflow.db").is_file()
    assert mlflow.get_experiment(experiment_id).artifact_location == shared
    assert tracking.connect(root, params.tracking) == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the next root does not inherit this one
    with pytest.raises(tracking.StoreError, match="outside this project"):
        tracking.connect(root)  # the default artifact_root: the artifacts should be inside


def test_the_repeated_fact_check_can_fail():
    from tests.helpers.tags import repeated_facts

    old = {"git_commit": "a" * 40, "git.commit": "a" * 40, "git.dirty": "false", "n": "3"}
    assert repeated_facts(old) == [("git.commit", "git_commit", "a" * 40)]
    assert repeated_facts({"git.dirty": "false", "placement.world_size": "1", "x": "1"}) == []


@pytest.mark.slow
def test_server_store_gets_proxied_artifacts_and_no_relocation_check(tmp_path, monkeypatch):
    from tests.helpers.team_services import team_services

    with team_services() as svc:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", svc["mlflow"])
        tracking.setup_experiment(Params(), tmp_path)
        location = tracking.mlflow.get_experiment_by_name(Params().tracking.experiment)
        assert location.artifact_location.startswith("mlflow-artifacts:")
        assert tracking.connect(tmp_path / "elsewhere") == svc["mlflow"]  # a second clone
