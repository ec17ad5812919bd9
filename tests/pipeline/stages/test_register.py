"""Register stage: lineage tags and the registry round trip (the rule itself:
tests/pipeline/evaluation/test_promotion.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.stages import register as reg
from tests.helpers.registry import log_training_run, make_project

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
    assert v1.tags["promotion.decision"] == "champion"
    assert v1.tags["dvc.download.data/raw"] == "a" * 32 + ".dir"
    assert v1.tags["dvc.patches.data/patches.h5"] == "c" * 32
    assert v1.tags["data.tno40.test"] == "3" and v1.tags["data.tno_masked.train"] == "2"
    assert v1.tags["model.vgg_weights"] == "random"
    assert float(v1.tags["eval.VIF"]) == GOOD["VIF"]
    assert v1.description.startswith("champion: first version")
    run = client.get_run(first["run_id"])
    assert run.data.tags["params.digest"] == PARAMS.digest()
    logged = {f.path for f in client.list_artifacts(first["run_id"], "lineage")}
    assert {"lineage/raw_index.csv", "lineage/masks_index.csv", "lineage/dvc.lock"} <= logged

    # a worse model: challenger, champion untouched
    (root / "reports/metrics.json").write_text(json.dumps({**GOOD, "VIF": 0.1, "Qabf": 0.1}))
    log_training_run(root, tracking_env)
    second = reg.run(PARAMS, ProjectPaths(root))
    assert second["alias"] == "challenger" and second["compared_to"] == "1"
    assert client.get_model_version_by_alias("coconet", "champion").version == 1
    assert client.get_model_version("coconet", "2").tags["promotion.decision"] == "challenger"

    # a better one takes the champion alias; its model folder comes through the alias
    (root / "reports/metrics.json").write_text(json.dumps({**GOOD, "VIF": 0.9, "Nabf": 0.01}))
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
