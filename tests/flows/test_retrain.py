"""The retrain flow's rollback and its lock, without a Prefect server (flows.retrain)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from filelock import FileLock

import flows.retrain
from flows.dvc_runner import run_dvc
from flows.inbox.ingestion import ingest
from flows.inbox.validation import scan_inbox
from flows.retrain import lock_path, undo
from flows.workspace_backup import WorkspaceBackup
from pipeline.core.params import PROJECT_ROOT
from tests.helpers.dvc_project import workspace_state, write_pair


def test_undo_restores_what_dvc_deleted_before_a_failing_stage(tiny, monkeypatch):
    """The rollback without Prefect: ingest, a `dvc repro` whose download fails, undo."""
    run_dvc(["repro"], tiny)
    before = workspace_state(tiny)
    backup = WorkspaceBackup.save(tiny)
    pairs, _ = scan_inbox(write_pair(tiny / "inbox" / "n1").parent)
    snapshot = ingest(pairs, tiny)
    monkeypatch.setenv("TINY_FAIL", "download")
    assert run_dvc(["repro"], tiny, check=False).returncode != 0
    assert not (tiny / "data/raw").exists() and not (tiny / "data/weights").exists()
    undo(tiny, snapshot, backup, {})
    assert workspace_state(tiny) == before
    assert not backup.folder.exists()


def test_retrain_cli_exits_75_while_another_retrain_holds_the_lock(tmp_path):
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

    from pipeline.cli import app

    monkeypatch.setattr(flows.retrain, "retrain", lambda *a, **k: {"status": "busy"})
    shutil.copyfile(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["retrain", "--root", str(tmp_path)])
    assert result.exit_code == 75
    assert "retrain busy" in result.output


def test_retrain_cli_refuses_an_inbox_over_dvc_tracked_data(tmp_path):
    """`coconet retrain --inbox incoming` would delete DVC-tracked files as duplicates."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    shutil.copyfile(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "incoming" / "p1").mkdir(parents=True)
    (tmp_path / "incoming.dvc").write_text("outs:\n- path: incoming\n")
    (tmp_path / "incoming" / "p1" / "ir.png").write_bytes(b"tracked")
    result = CliRunner().invoke(
        app, ["retrain", "--root", str(tmp_path), "--inbox", str(tmp_path / "incoming")]
    )
    assert result.exit_code == 1 and "which DVC tracks" in result.output, result.output
    assert (tmp_path / "incoming" / "p1" / "ir.png").read_bytes() == b"tracked"
