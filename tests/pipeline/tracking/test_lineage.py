"""Lineage audit: the recorded chain survives deleted inputs; --verify re-hashes the bytes as
DVC does (checked against a dvc.lock written by DVC) and detects drift; no store, no audit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.params import load_params
from pipeline.core.paths import ProjectPaths
from pipeline.stages import register as reg
from pipeline.tracking import lineage
from tests.helpers.registry import log_training_run, make_project

METRICS = {"VIF": 0.6, "Qabf": 0.5, "SSIM": 0.7}


def dvc_build_md5(root: Path, paths: list[str]) -> dict[str, str]:
    """The md5s DVC's own hashing (``dvc_data`` build) gives ``paths``: the reference."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build

    with Repo(str(root)) as repo:
        return {
            p: build(repo.cache.local, str(root / p), repo.fs, "md5", ignore=repo.dvcignore)[
                2
            ].hash_info.value
            for p in paths
        }


def flip_first_byte_keep_mtime(path: Path) -> None:
    """Change one byte in place (same inode and size) and put the modification time back."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


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
    hashes = dvc_build_md5(root, ["data/raw", "artifacts/model.pt"])
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
    evaluation = json.loads((root / "reports/evaluation_run.json").read_text())
    assert by_alias["evaluation"] == {
        "run_id": evaluation["run_id"],
        "status": "FINISHED",
        "means": {"tno40": METRICS},
    }
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


def verify_cli(root: Path):
    return CliRunner().invoke(app, ["lineage", "--verify", "--root", str(root)])


def test_verify_hashes_the_bytes_not_the_mtime(project):
    root, _ = project
    assert verify_cli(root).exit_code == 0  # DVC's state cache now knows the file's mtime
    flip_first_byte_keep_mtime(root / "data/raw/tno40/a.png")
    result = verify_cli(root)
    assert result.exit_code == 1, result.output
    assert "DRIFT data/raw" in result.output and "ok    artifacts/model.pt" in result.output


def test_verify_ok_again_after_cp_a_restore(project, tmp_path):
    from dvc.repo import Repo

    root, _ = project
    with Repo(str(root)) as repo:
        shutil.rmtree(repo.site_cache_dir)  # DVC forgets the hashes it knew (its state cache)
    target, backup = root / "data/raw/tno40/a.png", tmp_path / "a.png.orig"
    shutil.copy2(target, backup)
    flip_first_byte_keep_mtime(target)
    assert verify_cli(root).exit_code == 1
    subprocess.run(["cp", "-a", str(backup), str(target)], check=True)  # same inode and mtime
    result = verify_cli(root)
    assert result.exit_code == 0, result.output
    assert "ok    data/raw" in result.output


def test_hashes_match_a_dvc_lock_written_by_dvc(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    (root / ".dvcignore").write_text("*.tmp\n")
    files = {
        "out/a.bin": bytes(range(256)) * 40,
        "out/sub/b.txt": b"x\r\ny\n",  # DVC 3 hashes text as it is (no dos2unix)
        "out/sub/deeper/c": b"",
        "out/\u00e9t\u00e9 d.png": b"\x89PNG",
        "out/skip.tmp": b"ignored by .dvcignore",
        "single.h5": b"h5" * 3000,
    }
    (root / "make.py").write_text(
        "from pathlib import Path\n"
        f"for rel, data in {files!r}.items():\n"
        "    Path(rel).parent.mkdir(parents=True, exist_ok=True)\n"
        "    Path(rel).write_bytes(data)\n"
    )
    stage = {"cmd": f"{sys.executable} make.py", "deps": ["make.py"], "outs": ["out", "single.h5"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": stage}}))
    subprocess.run([*dvc, "repro", "-q"], cwd=root, env=env, check=True)
    outs = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["make"]["outs"]
    recorded = {o["path"]: o["md5"] for o in outs}
    assert recorded["out"].endswith(".dir") and len(recorded) == 2
    assert lineage.local_md5(root, sorted(recorded)) == recorded
    assert lineage.local_md5(root, ["nothing"]) == {"nothing": None}


def test_lineage_without_a_store_refuses_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text("model:\n  vgg_weights: random\n")
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["lineage", "--verify", "--root", str(tmp_path)])
    assert result.exit_code == 1, result.output
    db = tmp_path.resolve() / "mlflow.db"
    assert f"{db}: no MLflow store here" in result.output
    assert "run the pipeline first" in result.output and "MLFLOW_TRACKING_URI" in result.output
    assert sorted(tmp_path.rglob("*")) == before


def test_verify_notices_a_tampered_dvc_lock(project):
    """The files are intact but dvc.lock was edited: DVC would trust the edit, verify does not."""
    root, record = project
    assert verify_cli(root).exit_code == 0
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    lock["stages"]["download"]["outs"][0]["md5"] = "f" * 32 + ".dir"
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    result = verify_cli(root)
    assert result.exit_code == 1, result.output
    assert "DRIFT dvc.lock data/raw" in result.output and "ok    data/raw" in result.output
    summary = CliRunner().invoke(app, ["lineage", "--root", str(root)])
    assert f"eval     run {record['evaluation_run_id']} (FINISHED)" in summary.output
