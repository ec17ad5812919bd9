"""Flows against a tiny throwaway DVC project: stage tasks, overrides, inbox ingestion, and the
pipeline/retrain flows end to end on a temporary Prefect server (trivial python stages)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib
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
import numpy as np
import yaml
from PIL import Image
stage = sys.argv[1]
if os.environ.get("TINY_FAIL") == stage:
    sys.exit(f"error: {stage} failed on purpose")  # one line, as pipeline.core.stage prints
if stage == "download":
    datasets = yaml.safe_load(open("params.yaml"))["download"]["datasets"]
    tsv = pathlib.Path("pipeline/catalogue/datasets/inbox.tsv")
    rows = tsv.read_text().splitlines()[1:] if "inbox" in datasets and tsv.exists() else []
    for row in rows:
        assert pathlib.Path(row.split("\\t")[2]).is_file(), row
    raw = pathlib.Path("data/raw")
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "count.txt").write_text(str(len(rows)))
    y, x = np.mgrid[0:96, 0:128]
    test = {"ir": 128 + 60 * np.sin(x / 7) * np.cos(y / 11) + 40 * np.sin((x + y) / 17),
            "vis": 128 + 70 * np.cos(x / 9 + y / 13) * np.sin(y / 6)}
    for role, image in test.items():
        (raw / "tiny" / role).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(raw / "tiny" / role / "t1.png")
    (raw / "index.csv").write_text(
        "pair_id,dataset,pair,split,ir,vis\\n"
        "tiny/t1,tiny,t1,test,data/raw/tiny/ir/t1.png,data/raw/tiny/vis/t1.png\\n"
    )
    pathlib.Path("data/weights").mkdir(parents=True, exist_ok=True)
    pathlib.Path("data/weights/README.txt").write_text("no weights\\n")
elif stage == "evaluate":
    pathlib.Path("reports").mkdir(exist_ok=True)
    body = {"VIF": 0.5, "Nabf": 0.1, "n_pairs": 2, "baselines": {"average": {"VIF": 0.25}}}
    pathlib.Path("reports/metrics.json").write_text(json.dumps(body))
elif stage == "register":
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
            "outs": ["data/raw", "data/weights"],
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
    rng = np.random.default_rng(zlib.crc32(folder.name.encode()))  # other names, other images
    write_image(folder / f"ir{ext}", rng.random(size).astype(np.float32))
    write_image(folder / f"vis{ext}", rng.random((*(vis_size or size), 3)).astype(np.float32))
    return folder


def _state(root: Path) -> dict[str, bytes]:
    """Every file a retrain may change: data, outputs, incoming, catalogue, params, dvc.lock."""
    tops = ("data", "reports", "artifacts", "incoming", "pipeline")
    names = ("params.yaml", "dvc.lock", "incoming.dvc", ".gitignore")
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and (path.relative_to(root).parts[0] in tops or path.name in names)
        and not path.relative_to(root).parts[0].startswith(".")
    }


def _leak(root: Path, folder: Path) -> None:
    """An edited copy of the tiny project's test pair: cropped, brighter, saved as BMP."""
    from PIL import Image

    folder.mkdir(parents=True)
    for role in ("ir", "vis"):
        image = np.asarray(Image.open(root / f"data/raw/tiny/{role}/t1.png"), dtype=np.int16)
        edited = np.clip(image[3:-5, 4:-2] + 25, 0, 255).astype(np.uint8)
        Image.fromarray(edited).save(folder / f"{role}.bmp")


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
    comment = "# a comment the user wrote\n"  # params.yaml itself is composed, comment-free
    params.write_text(comment + (PROJECT_ROOT / "params.yaml").read_text())
    applied = apply_overrides(params, ["train.phase1_epochs=1", "download.datasets=[tno40]"])
    assert applied == {"train.phase1_epochs": 1, "download.datasets": ["tno40"]}
    loaded = load_params(params)
    assert loaded.train.phase1_epochs == 1 and loaded.download.datasets == ["tno40"]
    assert params.read_text().startswith(comment)  # comments kept
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
    assert not (tiny / ".gitignore").exists()  # written by `dvc add incoming`, undone too
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
    assert "| CoCoNet | **0.5000** |" in first["report"] and "version **0**" in first["report"]
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

    _leak(tiny, inbox / "leak")  # an edited copy of the test pair: never trained on
    refused = retrain(str(tiny), str(inbox))
    assert refused["status"] == "nothing new" and "test pair tiny/t1" in refused["rejected"]["leak"]

    _pair(inbox / "n2")
    monkeypatch.setenv("TINY_FAIL", "register")
    before = _state(tiny)
    with pytest.raises(Exception, match="register failed on purpose"):
        retrain(str(tiny), str(inbox))
    assert _state(tiny) == before  # incl. artifacts/registered.json, which DVC had deleted
    assert (inbox / "n2/ir.png").is_file() and not (tiny / "incoming/n2").exists()
    assert [r["pair"] for r in inbox_mod.read_catalogue(tiny)] == ["n1", "n1"]
    assert json.loads((tiny / "artifacts/registered.json").read_text())["version"] == "2"
    monkeypatch.delenv("TINY_FAIL")

    with FileLock(str(lock_path(tiny))):
        assert retrain(str(tiny), str(inbox))["status"] == "busy"
    assert (inbox / "n2").exists() and (inbox / "leak").exists()


@pytest.mark.slow
def test_failed_download_rolls_the_retrain_back(tiny, prefect_server, monkeypatch):
    """DVC deletes data/raw and data/weights before the download stage runs; when it fails, the
    retrain restores them (dvc checkout of the last dvc.lock), the catalogue and params too."""
    from flows.repro import run_pipeline
    from flows.retrain import retrain

    run_pipeline(str(tiny))
    inbox = tiny / "inbox"
    _pair(inbox / "n1")
    before = _state(tiny)
    assert {"data/raw/index.csv", "data/weights/README.txt", "dvc.lock"} <= set(before)
    monkeypatch.setenv("TINY_FAIL", "download")
    with pytest.raises(Exception, match="download failed on purpose"):
        retrain(str(tiny), str(inbox), download_retries=0)
    assert _state(tiny) == before
    assert not (tiny / "incoming").exists() and (inbox / "n1/ir.png").is_file()
    assert pending_stages(tiny) == {}
    assert not list((tiny / ".dvc/tmp").glob("retrain-backup-*"))


def test_undo_restores_what_dvc_deleted_before_a_failing_stage(tiny, monkeypatch):
    """The rollback without Prefect: ingest, a `dvc repro` whose download fails, undo."""
    from flows.dvc_cli import WorkspaceBackup, run_dvc
    from flows.retrain import undo

    run_dvc(["repro"], tiny)
    before = _state(tiny)
    backup = WorkspaceBackup.save(tiny)
    pairs, _ = inbox_mod.scan_inbox(_pair(tiny / "inbox" / "n1").parent)
    snapshot = inbox_mod.ingest(pairs, tiny)
    monkeypatch.setenv("TINY_FAIL", "download")
    assert run_dvc(["repro"], tiny, check=False).returncode != 0
    assert not (tiny / "data/raw").exists() and not (tiny / "data/weights").exists()
    undo(tiny, snapshot, backup, {})
    assert _state(tiny) == before
    assert not backup.folder.exists()


def test_retrain_cli_exits_75_while_another_retrain_holds_the_lock(tmp_path):
    from flows.retrain import lock_path

    root = tmp_path / "project"
    lock_path(root).parent.mkdir(parents=True)
    with FileLock(str(lock_path(root))):
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from pipeline.cli import main; main()",
                "retrain",
                "--root",
                str(root),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 75, proc.stdout + proc.stderr  # EX_TEMPFAIL: try again later
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "retrain busy" in lines[0] and str(lock_path(root)) in lines[0]


def test_retrain_cli_exits_75_when_the_flow_finds_the_lock_taken(tmp_path, monkeypatch):
    """The lock was free when the command checked it, then taken before the flow tried it."""
    from typer.testing import CliRunner

    import flows.retrain
    from pipeline.cli import app

    monkeypatch.setattr(flows.retrain, "retrain", lambda *a, **k: {"status": "busy"})
    result = CliRunner().invoke(app, ["retrain", "--root", str(tmp_path)])
    assert result.exit_code == 75
    assert "retrain busy" in result.output
