"""Lineage audit: the recorded chain survives deleted inputs; --verify detects drift."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from registry_fixtures import log_training_run, make_project

from pipeline.core.params import load_params
from pipeline.core.paths import ProjectPaths
from pipeline.stages import register as reg
from pipeline.tracking import lineage

METRICS = {"VIF": 0.6, "Qabf": 0.5, "SSIM": 0.7}


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A registered model whose dvc.lock hashes are the real DVC md5s of local files."""
    from dvc.repo import Repo

    root = make_project(tmp_path / "proj", METRICS)
    Repo.init(str(root), no_scm=True).close()
    for name in ("a", "b"):
        (root / f"data/raw/tno40/{name}.png").parent.mkdir(parents=True, exist_ok=True)
        (root / f"data/raw/tno40/{name}.png").write_bytes(name.encode() * 10)
    (root / "artifacts/model.pt").parent.mkdir(exist_ok=True)
    (root / "artifacts/model.pt").write_bytes(b"weights")
    hashes = lineage.local_md5(root, ["data/raw", "artifacts/model.pt"])
    assert hashes["data/raw"].endswith(".dir")
    lock = {
        "schema": "2.0",
        "stages": {
            "download": {"outs": [{"path": "data/raw", "md5": hashes["data/raw"]}]},
            "train": {
                "outs": [{"path": "artifacts/model.pt", "md5": hashes["artifacts/model.pt"]}]
            },
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    log_training_run(root, uri)
    record = reg.run(load_params(root / "params.yaml"), ProjectPaths(root))
    return root, record


def test_chain_from_alias_and_from_run_id(project):
    root, record = project
    by_alias = lineage.collect("models:/coconet@champion")
    assert by_alias["model"]["version"] == "1" and by_alias["model"]["aliases"] == ["champion"]
    assert by_alias["run"]["run_id"] == record["run_id"]
    assert by_alias["run"]["params"]["train.lr"] == "0.0001"
    assert by_alias["dvc"]["download"]["data/raw"].endswith(".dir")
    assert by_alias["evaluation"] == METRICS
    tno = {d["name"]: d for d in by_alias["datasets"]}["tno_masked"]
    assert tno["splits"] == {"train": 2}
    assert tno["pairs"][0]["mask_method"] == "ir_saliency"
    assert tno["pairs"][0]["ir_url"].startswith("https://example.org/")
    by_run = lineage.collect(record["run_id"])
    assert by_run["model"]["version"] == "1" and by_run["dvc"] == by_alias["dvc"]
    assert lineage.collect("models:/coconet/1")["run"]["run_id"] == record["run_id"]
    with pytest.raises(lineage.LineageError):
        lineage.collect("models:/coconet@nosuchalias")


def test_verify_reports_drift_and_survives_deleted_inputs(project):
    root, _ = project
    text, drift = lineage.audit(check=True, root=root, pairs=True)
    assert not drift, text
    assert "ok    data/raw" in text and "tno40/p0 [test]" in text

    (root / "data/raw/tno40/a.png").write_bytes(b"tampered")
    report, drift = lineage.audit(as_json=True, check=True, root=root)
    checks = {c["item"]: c for c in json.loads(report)["verify"]}
    assert drift and not checks["data/raw"]["ok"] and checks["artifacts/model.pt"]["ok"]

    shutil.rmtree(root / "data")
    recorded = lineage.collect()
    assert {d["name"] for d in recorded["datasets"]} == {"tno40", "tno_masked"}
    checks = {c["item"]: c for c in lineage.verify(recorded, root)}
    assert checks["data/raw"]["local"] is None and not checks["data/raw"]["ok"]


def test_summary_fits_one_screen_and_pairs_add_the_detail(project):
    from typer.testing import CliRunner

    from pipeline.cli import app

    root, _ = project
    recorded = lineage.collect()
    text, drift = lineage.audit(root=root)
    lines = text.splitlines()
    assert not drift and len(lines) <= 40, text
    assert f"commit {recorded['run']['git_commit']}" in text
    assert recorded["params_digest"] and recorded["params_digest"] in text
    assert "tno40: 3 test; masks: none" in text
    assert "tno_masked: 2 train; masks: ir_saliency 2" in text
    assert recorded["dvc"]["download"]["data/raw"][:8] in text
    assert "--pairs" in lines[-1]
    sha = recorded["datasets"][0]["pairs"][0]["ir_sha256"]
    assert sha not in text and "https://example.org/" not in text

    runner = CliRunner()
    detailed = runner.invoke(app, ["lineage", "--pairs", "--root", str(root)])
    assert detailed.exit_code == 0, detailed.output
    assert sha in detailed.output and "tno40/p0 [test]" in detailed.output
    assert detailed.output.startswith(text.split("\n(--pairs")[0])
    verified = runner.invoke(app, ["lineage", "--verify", "--root", str(root)])
    assert verified.exit_code == 0 and "ok    data/raw" in verified.output, verified.output
    assert sha not in verified.output
    as_json = runner.invoke(app, ["lineage", "--json", "--root", str(root)])
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["datasets"] == recorded["datasets"] and body["verify"] is None
    assert {p["ir_sha256"] for d in body["datasets"] for p in d["pairs"]} >= {sha}
