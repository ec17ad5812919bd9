"""The retrain flow's rollback and its lock, without a Prefect server (flows.retrain)."""

from __future__ import annotations

import subprocess
import sys

from filelock import FileLock

import flows.retrain
from flows.dvc_runner import run_dvc
from flows.inbox.ingestion import ingest
from flows.inbox.validation import scan_inbox
from flows.retrain import lock_path, undo
from flows.workspace_backup import WorkspaceBackup
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
    result = CliRunner().invoke(app, ["retrain", "--root", str(tmp_path)])
    assert result.exit_code == 75
    assert "retrain busy" in result.output
