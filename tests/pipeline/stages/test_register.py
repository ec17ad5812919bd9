"""Register stage: lineage tags and the registry round trip (the rule itself:
tests/pipeline/evaluation/test_promotion.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.stages import register as reg
from tests.helpers.registry import log_training_run, make_project, write_metrics
from tests.helpers.tags import repeated_facts

PARAMS = Params.model_validate(
    {"model": {"vgg_weights": "random"}, "register": {"promote_metrics": ["VIF", "Qabf", "Nabf"]}}
)
GOOD = {"VIF": 0.6, "Qabf": 0.5, "Nabf": 0.02, "SSIM": 0.7}


def test_register_promotes_by_rule_and_records_lineage(tmp_path, tracking_env):
    import mlflow
    from mlflow import MlflowClient

    root = make_project(tmp_path / "proj", GOOD)
    log_training_run(root, tracking_env)
    first = reg.run(PARAMS, ProjectPaths(root))
    assert first["version"] == "1" and first["alias"] == "champion"
    assert json.loads((root / "artifacts/registered.json").read_text()) == first

    client = MlflowClient(tracking_env)
    v1 = client.get_model_version("coconet", "1")
    evaluation = json.loads((root / "reports/evaluation_run.json").read_text())
    assert v1.tags["promotion.decision"] == "champion"
    assert v1.tags["eval.run_id"] == evaluation["run_id"] == first["evaluation_run_id"]
    assert v1.tags["eval.test_fingerprint"] == evaluation["test_fingerprint"]
    hashes = json.loads(v1.tags["dvc.lock"])
    assert hashes["download"]["data/raw"] == "a" * 32 + ".dir"
    assert hashes["patches"]["data/patches.h5"] == "c" * 32
    assert json.loads(v1.tags["data.pairs"]) == {"tno40": {"test": 3}, "tno_masked": {"train": 2}}
    assert v1.tags["params.sha256"] == PARAMS.digest()
    assert len(v1.tags) <= 10  # the version page stays readable
    assert repeated_facts(v1.tags) == []
    assert v1.description.startswith("champion: first version")
    run_before = client.get_run(first["run_id"]).data  # register writes nothing to the run
    assert "promotion.decision" not in run_before.tags

    # registering the same training run again changes nothing
    again = reg.run(PARAMS, ProjectPaths(root))
    assert again["version"] == "1" and again["reason"].startswith("already registered")
    assert len(client.search_model_versions("name = 'coconet'")) == 1

    # a worse model: challenger, champion untouched
    write_metrics(root, {**GOOD, "VIF": 0.1, "Qabf": 0.1})
    log_training_run(root, tracking_env)
    second = reg.run(PARAMS, ProjectPaths(root))
    assert second["alias"] == "challenger" and second["compared_to"] == "1"
    assert client.get_model_version_by_alias("coconet", "champion").version == 1
    assert client.get_model_version("coconet", "2").tags["promotion.decision"] == "challenger"

    # a better one takes the champion alias; its model folder comes through the alias
    write_metrics(root, {**GOOD, "VIF": 0.9, "Nabf": 0.01})
    log_training_run(root, tracking_env)
    third = reg.run(PARAMS, ProjectPaths(root))
    assert third["alias"] == "champion"
    assert client.get_model_version_by_alias("coconet", "champion").version == 3
    folder = Path(
        mlflow.artifacts.download_artifacts("models:/coconet@champion", dst_path=tmp_path / "dl")
    )
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "pipeline.tracking.pyfunc_model"
    assert (folder / flavor["data"] / "model.safetensors").is_file()


def test_a_version_left_without_a_decision_is_completed_not_duplicated(tmp_path, monkeypatch):
    """A register killed right after MLflow created the version leaves it without a decision
    or alias; the next register completes that version instead of adding another."""
    import mlflow
    from mlflow import MlflowClient

    tracking_env = f"sqlite:///{tmp_path / 'own.db'}"  # a registry of its own
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_env)
    root = make_project(tmp_path / "proj", GOOD)
    record = log_training_run(root, tracking_env)
    mlflow.register_model(record["model_uri"], "coconet")  # the orphan
    done = reg.run(PARAMS, ProjectPaths(root))
    client = MlflowClient(tracking_env)
    assert done["version"] == "1" and done["alias"] == "champion"
    assert len(client.search_model_versions("name = 'coconet'")) == 1
    v1 = client.get_model_version("coconet", "1")
    assert v1.tags["promotion.decision"] == "champion" and v1.tags["eval.run_id"]
    assert str(client.get_model_version_by_alias("coconet", "champion").version) == "1"


def test_the_alias_moves_only_when_the_promotion_is_written(tmp_path, monkeypatch):
    """The store gone (or the process killed) as the better version's alias would move: the
    champion stays where it was; the next register moves it, without a second version."""
    import pytest
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    tracking_env = f"sqlite:///{tmp_path / 'own.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_env)
    root = make_project(tmp_path / "proj", GOOD)
    log_training_run(root, tracking_env)
    reg.run(PARAMS, ProjectPaths(root))
    write_metrics(root, {**GOOD, "VIF": 0.9, "Nabf": 0.01})
    log_training_run(root, tracking_env)
    client = MlflowClient(tracking_env)

    def gone(*args, **kwargs):
        raise MlflowException("API request failed: Connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "set_registered_model_alias", gone)
        with pytest.raises(MlflowException):
            reg.run(PARAMS, ProjectPaths(root))
    assert client.get_model_version_by_alias("coconet", "champion").version == 1
    assert client.get_model_version("coconet", "2").tags["promotion.decision"] == "champion"
    done = reg.run(PARAMS, ProjectPaths(root))
    assert done["version"] == "2" and done["alias"] == "champion"
    assert client.get_model_version_by_alias("coconet", "champion").version == 2
    assert len(client.search_model_versions("name = 'coconet'")) == 2
