"""Register stage: lineage tags, the promotion rule and the registry round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from registry_fixtures import log_training_run, make_project

from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.stages import register as reg

PARAMS = Params.model_validate(
    {"model": {"vgg_weights": "random"}, "register": {"promote_metrics": ["VIF", "Qabf", "Nabf"]}}
)
GOOD = {"VIF": 0.6, "Qabf": 0.5, "Nabf": 0.02, "SSIM": 0.7}


def champion(version: str, means: dict[str, float], fingerprint: str = "fp"):
    tags = {f"eval.{k}": repr(v) for k, v in means.items()}
    tags[reg.FINGERPRINT_TAG] = fingerprint
    return version, tags


def test_first_version_becomes_champion():
    decision = reg.decide(GOOD, "fp", None, PARAMS)
    assert decision.promote and decision.alias == "champion"
    assert "first version" in decision.reason


def test_wins_counted_in_each_metric_direction():
    # Nabf is lower-is-better: 0.01 < 0.02 wins; VIF wins; Qabf loses -> 2 of 3 >= min_wins 2
    new = {"VIF": 0.7, "Qabf": 0.4, "Nabf": 0.01}
    decision = reg.decide(new, "fp", champion("3", GOOD), PARAMS)
    assert decision.promote, decision.reason
    assert decision.compared_to == "3" and "2/3" in decision.reason
    # higher Nabf is worse: only VIF wins
    worse = {"VIF": 0.7, "Qabf": 0.4, "Nabf": 0.03}
    decision = reg.decide(worse, "fp", champion("3", GOOD), PARAMS)
    assert not decision.promote and decision.alias == "challenger"
    assert "does not beat champion v3 on 1/3" in decision.reason


def test_ties_do_not_win():
    decision = reg.decide(dict(GOOD), "fp", champion("1", GOOD), PARAMS)
    assert not decision.promote and "0/3" in decision.reason


def test_different_test_split_is_not_comparable():
    better = {k: v * 2 if k != "Nabf" else v / 2 for k, v in GOOD.items()}
    decision = reg.decide(better, "fp-new", champion("2", GOOD, "fp-old"), PARAMS)
    assert not decision.promote
    assert decision.reason.startswith("not comparable") and "champion v2" in decision.reason


def test_bad_rule_is_an_error():
    bad = Params.model_validate({"register": {"promote_metrics": ["VIF", "nonsense"]}})
    with pytest.raises(ValueError, match="unknown metric"):
        reg.decide(GOOD, "fp", None, bad)
    with pytest.raises(ValueError, match="lacks promote metric"):
        reg.decide({"VIF": 1.0}, "fp", None, PARAMS)


def test_metrics_json_layouts():
    layout = {"VIF": 1, "SSIM": None, "n_pairs": 21, "baselines": {"x": {"VIF": 2}}}
    assert reg.coconet_means(layout) == {"VIF": 1.0}
    assert reg.coconet_means({"coconet": {"mean": {"SSIM": 0.5}, "std": {}}}) == {"SSIM": 0.5}
    with pytest.raises(ValueError):
        reg.coconet_means({"baselines": {}})


def test_fingerprint_follows_test_pairs_and_protocol(tmp_path):
    rows = reg.read_index(make_project(tmp_path / "a", GOOD) / "data/raw/index.csv")
    base = reg.test_fingerprint(rows, PARAMS)
    train_changed = [dict(r, vis_sha256="x") if r["split"] == "train" else r for r in rows]
    assert reg.test_fingerprint(train_changed, PARAMS) == base
    test_changed = [dict(r, ir_sha256="x") if r["split"] == "test" else r for r in rows]
    assert reg.test_fingerprint(test_changed, PARAMS) != base
    other = PARAMS.model_copy(
        update={"evaluate": PARAMS.evaluate.model_copy(update={"convention": "cddfuse"})}
    )
    assert reg.test_fingerprint(rows, other) != base
    assert reg.dataset_counts(rows) == {"tno40": {"test": 3}, "tno_masked": {"train": 2}}


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
