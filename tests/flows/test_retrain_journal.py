"""A retrain killed outright leaves its journal; the next retrain rolls it back first
(flows.retrain_journal, flows.retrain.recover), without a Prefect server."""

from __future__ import annotations

import json

from flows.dvc_runner import pending_stages, run_dvc
from flows.inbox.ingestion import Snapshot, ingest
from flows.inbox.validation import scan_inbox
from flows.retrain import recover, undo
from flows.retrain_journal import RetrainJournal, journal_path
from flows.workspace_backup import WorkspaceBackup
from tests.helpers.dvc_project import workspace_state, write_pair


def _killed_mid_run(tiny):
    """What a retrain leaves when it dies in its evaluate stage: pairs ingested, download
    re-run (dvc.lock and data changed), an output DVC deleted, no rollback."""
    before = pending_stages(tiny)
    backup = WorkspaceBackup.save(tiny)
    journal = RetrainJournal.begin(tiny, "run-1", backup.folder, before)
    pairs, _ = scan_inbox(write_pair(tiny / "inbox" / "n1").parent)
    ingest(pairs, tiny, journal=tiny / journal.snapshot)
    run_dvc(["repro", "download"], tiny)
    (tiny / "reports/metrics.json").unlink()  # DVC deletes a stage's outputs before it runs
    return backup


def test_the_next_retrain_rolls_back_a_killed_one(tiny):
    run_dvc(["repro"], tiny)
    before = workspace_state(tiny)
    backup = _killed_mid_run(tiny)
    assert workspace_state(tiny) != before
    message = recover(tiny)
    assert message and "run-1" in message and "rolled back" in message
    assert workspace_state(tiny) == before
    assert not backup.folder.exists() and not journal_path(tiny).exists()
    assert pending_stages(tiny) == {}
    assert (tiny / "inbox/n1/ir.png").is_file()  # the inbox is never touched by a rollback
    assert recover(tiny) is None  # once


def test_the_ingestion_snapshot_is_written_before_each_change(tiny):
    run_dvc(["repro"], tiny)
    file = tiny / "snapshot.json"
    pairs, _ = scan_inbox(write_pair(tiny / "inbox" / "n1").parent)
    snapshot = ingest(pairs, tiny, journal=file)
    kept = Snapshot.load(file)
    assert kept.texts == snapshot.texts and kept.new_dirs == snapshot.new_dirs
    assert tiny / "incoming" / "n1" in kept.new_dirs
    assert json.loads(file.read_text())["texts"]  # plain JSON, readable by the next process


def test_a_journal_whose_rollback_had_finished_is_only_closed(tiny):
    run_dvc(["repro"], tiny)
    before = workspace_state(tiny)
    backup = _killed_mid_run(tiny)
    journal = RetrainJournal.left_behind(tiny)
    undo(tiny, Snapshot.load(tiny / journal.snapshot), backup, journal.before)
    assert journal_path(tiny).exists()  # the process died before closing its journal
    assert "run-1" in (recover(tiny) or "")
    assert not journal_path(tiny).exists() and workspace_state(tiny) == before
