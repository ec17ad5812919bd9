"""Flows against a tiny throwaway DVC project: stage tasks, overrides, inbox ingestion, and the
pipeline/retrain flows end to end on a temporary Prefect server (trivial python stages)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from filelock import FileLock

from flows import inbox as inbox_mod
from flows.dvc_cli import pending_stages, stage_names
from flows.overrides import apply_overrides
from flows.repro import metric_table
from flows.tasks import repro_stage
from pipeline.core.imageio import write_image
from pipeline.core.params import PROJECT_ROOT, ParamsError, load_params

STAGES_PY = """
import json, os, pathlib, sys
import yaml
stage = sys.argv[1]
if stage == "download":
    datasets = yaml.safe_load(open("params.yaml"))["download"]["datasets"]
    tsv = pathlib.Path("pipeline/catalogue/datasets/inbox.tsv")
    rows = tsv.read_text().splitlines()[1:] if "inbox" in datasets and tsv.exists() else []
    for row in rows:
        assert pathlib.Path(row.split("\\t")[2]).is_file(), row
    pathlib.Path("data/raw").mkdir(parents=True, exist_ok=True)
    pathlib.Path("data/raw/count.txt").write_text(str(len(rows)))
elif stage == "evaluate":
    pathlib.Path("reports").mkdir(exist_ok=True)
    body = {"VIF": 0.5, "Nabf": 0.1, "n_pairs": 2, "baselines": {"average": {"VIF": 0.25}}}
    pathlib.Path("reports/metrics.json").write_text(json.dumps(body))
elif stage == "register":
    if os.environ.get("TINY_FAIL"):
        sys.exit("register failed on purpose")
    n = pathlib.Path("data/raw/count.txt").read_text()
    pathlib.Path("artifacts").mkdir(exist_ok=True)
    record = {"name": "coconet", "version": n, "alias": "champion", "decision": "promoted",
              "reason": f"{n} inbox files"}
    pathlib.Path("artifacts/registered.json").write_text(json.dumps(record))
"""

DVC_YAML = {
    "stages": {
        "download": {
            "cmd": "python stages.py download",
            "deps": ["stages.py", "pipeline/catalogue"],
            "params": ["download.datasets"],
            "outs": ["data/raw"],
        },
        "evaluate": {
            "cmd": "python stages.py evaluate",
            "deps": ["data/raw"],
            "outs": [{"reports/metrics.json": {"cache": False}}],
        },
        "register": {
            "cmd": "python stages.py register",
            "deps": ["data/raw", "reports/metrics.json"],
            "outs": [{"artifacts/registered.json": {"cache": False}}],
        },
    }
}


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture()
def tiny(tmp_path) -> Path:
    """A git + DVC project with three trivial stages and the real params.yaml."""
    root = tmp_path / "tiny"
    (root / "pipeline/catalogue/datasets").mkdir(parents=True)
    (root / "pipeline/catalogue/datasets/README").write_text("catalogue\n")
    shutil.copyfile(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    (root / "stages.py").write_text(STAGES_PY)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    _git(root, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    return root


def _pair(folder: Path, size=(6, 8), vis_size=None, ext=".png") -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(folder.name))
    write_image(folder / f"ir{ext}", rng.random(size).astype(np.float32))
    write_image(folder / f"vis{ext}", rng.random((*(vis_size or size), 3)).astype(np.float32))
    return folder


def test_repro_stage_runs_then_skips(tiny):
    assert stage_names(tiny) == ["download", "evaluate", "register"]
    first = repro_stage.fn("download", str(tiny))
    assert first["ran"] and (tiny / "data/raw/count.txt").read_text() == "0"
    assert not repro_stage.fn("download", str(tiny))["ran"]
    (tiny / "data/raw/count.txt").write_text("changed")  # a stale output: DVC must notice
    assert repro_stage.fn("download", str(tiny))["ran"]
    assert repro_stage.fn("evaluate", str(tiny), known_up_to_date=True)["ran"] is False
    assert "download" not in pending_stages(tiny) and "evaluate" in pending_stages(tiny)


def test_overrides_edit_params_in_place_and_validate(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copyfile(PROJECT_ROOT / "params.yaml", params)
    applied = apply_overrides(params, ["train.phase1_epochs=1", "download.datasets=[tno40]"])
    assert applied == {"train.phase1_epochs": 1, "download.datasets": ["tno40"]}
    loaded = load_params(params)
    assert loaded.train.phase1_epochs == 1 and loaded.download.datasets == ["tno40"]
    assert "# One section per stage" in params.read_text()  # comments kept
    before = params.read_text()
    for bad in ("train.batch_size=-3", "nosection.key=1", "novalue"):
        with pytest.raises(ParamsError):
            apply_overrides(params, [bad])
        assert params.read_text() == before


def test_inbox_scan_accepts_good_pairs_and_explains_rejections(tmp_path):
    inbox = tmp_path / "inbox"
    _pair(inbox / "good")
    _pair(inbox / "bmp_pair", ext=".bmp")
    _pair(inbox / "sizes", vis_size=(6, 9))
    (inbox / "novis").mkdir()
    write_image(inbox / "novis/ir.png", np.zeros((4, 4), np.float32))
    (inbox / "broken").mkdir()
    (inbox / "broken/ir.png").write_bytes(b"not an image")
    (inbox / "broken/vis.png").write_bytes(b"not an image")
    _pair(inbox / "bad name!")
    (inbox / "stray.png").write_bytes(b"x")
    pairs, rejected = inbox_mod.scan_inbox(inbox)
    assert [p.name for p in pairs] == ["bmp_pair", "good"]
    assert set(pairs[1].files) == {"ir", "vis"} and len(pairs[1].sha256["ir"]) == 64
    assert "sizes differ" in rejected["sizes"]
    assert "missing vis" in rejected["novis"]
    assert "ir.png" in rejected["broken"]
    assert "folder name" in rejected["bad name!"]
    assert "not a folder" in rejected["stray.png"]
    assert inbox_mod.scan_inbox(tmp_path / "absent") == ([], {})


def test_ingest_tracks_pairs_with_dvc_and_rollback_restores(tiny):
    inbox = tiny / "inbox"
    pairs, _ = inbox_mod.scan_inbox(_pair(inbox / "n1").parent)
    params_before = (tiny / "params.yaml").read_text()
    snapshot = inbox_mod.ingest(pairs, tiny)
    rows = inbox_mod.read_catalogue(tiny)
    assert [(r["pair"], r["role"], r["url"]) for r in rows] == [
        ("n1", "ir", "incoming/n1/ir.png"),
        ("n1", "vis", "incoming/n1/vis.png"),
    ]
    assert rows[0]["sha256"] == pairs[0].sha256["ir"]
    assert (tiny / "incoming/n1/ir.png").read_bytes() == (inbox / "n1/ir.png").read_bytes()
    assert "inbox" in load_params(tiny / "params.yaml").download.datasets
    assert yaml.safe_load((tiny / "incoming.dvc").read_text())["outs"][0]["path"] == "incoming"
    assert "local: true" in (tiny / "pipeline/catalogue/datasets/inbox.yaml").read_text()
    new, dup, conflicts = inbox_mod.plan(pairs, tiny)
    assert (new, [p.name for p in dup], conflicts) == ([], ["n1"], {})
    inbox_mod.rollback(snapshot)
    assert (tiny / "params.yaml").read_text() == params_before
    assert not (tiny / "incoming/n1").exists() and not (tiny / "incoming.dvc").exists()
    assert inbox_mod.read_catalogue(tiny) == []
    assert (inbox / "n1/ir.png").is_file()  # the inbox is never touched by ingest/rollback


def test_metric_table_marks_directions():
    table = metric_table({"VIF": 0.5, "Nabf": 0.1, "baselines": {"avg": {"VIF": 0.25}}})
    assert "VIF ↑" in table and "Nabf ↓" in table
    assert "| CoCoNet | **0.5000** | **0.1000** |" in table and "| avg | 0.2500 | – |" in table


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_flows_end_to_end(tiny, prefect_server, monkeypatch):
    """pipeline flow twice (second is a no-op), retrain with nothing new, retrain on a new pair,
    a failing retrain that leaves the inbox intact, and a retrain refused by the lock."""
    from prefect.client.orchestration import get_client

    from flows.repro import run_pipeline
    from flows.retrain import lock_path, retrain

    first = run_pipeline(str(tiny))
    assert first["ran"] == ["download", "evaluate", "register"]
    assert "| CoCoNet | 0.5 |" in first["report"] and "version **0**" in first["report"]
    second = run_pipeline(str(tiny))
    assert second["ran"] == [] and "register was up to date" in second["report"]

    async def artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    import asyncio

    keys = {a.key for a in asyncio.run(artifact())}
    assert "coconet-pipeline" in keys

    inbox = tiny / "inbox"
    assert retrain(str(tiny), str(inbox))["status"] == "nothing new"

    _pair(inbox / "n1")
    done = retrain(str(tiny), str(inbox))
    assert done["status"] == "retrained" and done["ingested"] == ["n1"]
    assert done["ran"] == ["download", "evaluate", "register"]
    assert done["registered"]["version"] == "2"  # two inbox files reached the stages
    assert not (inbox / "n1").exists() and (tiny / "incoming/n1/vis.png").is_file()

    _pair(inbox / "n2")
    monkeypatch.setenv("TINY_FAIL", "1")
    with pytest.raises(Exception, match="register"):
        retrain(str(tiny), str(inbox))
    assert (inbox / "n2/ir.png").is_file() and not (tiny / "incoming/n2").exists()
    assert [r["pair"] for r in inbox_mod.read_catalogue(tiny)] == ["n1", "n1"]
    registered = tiny / "artifacts/registered.json"  # DVC removes a stage's outs before running
    assert not registered.exists() or json.loads(registered.read_text())["version"] == "2"
    monkeypatch.delenv("TINY_FAIL")

    with FileLock(str(lock_path(tiny))):
        assert retrain(str(tiny), str(inbox))["status"] == "busy"
    assert (inbox / "n2").exists()
