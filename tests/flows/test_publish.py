"""A worker's retrain shared through git and a DVC remote (flows.publish): the tiny DVC project
as the workstation, a bare repository as origin, a local folder as the DVC remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flows.dvc_runner import pending_stages, run_dvc
from flows.inbox.ingestion import ingest, read_catalogue
from flows.inbox.validation import scan_inbox
from flows.publish import PublishError, git, prepare, publish
from tests.helpers.dvc_project import write_pair

IDENTITY = ["-c", "user.name=test", "-c", "user.email=test@example.org"]


def _clone(origin: Path, folder: Path, *args: str) -> Path:
    subprocess.run(["git", "clone", "-q", *args, str(origin), str(folder)], check=True)
    return folder


@pytest.fixture()
def origin(tiny: Path, tmp_path: Path) -> Path:
    """The workstation ran the pipeline, committed and pushed (git and DVC)."""
    run_dvc(["repro"], tiny)
    run_dvc(["remote", "add", "-d", "shared", str(tmp_path / "dvc-remote")], tiny)
    git(tiny, "add", "-A")
    git(tiny, *IDENTITY, "commit", "-qm", "pipeline run")
    run_dvc(["push"], tiny)
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(tiny), str(bare)], check=True)
    return bare


def test_a_pulled_clone_is_up_to_date_and_a_retrain_comes_back_on_a_branch(origin, tmp_path):
    worker = _clone(origin, tmp_path / "worker")
    prepare(worker, "retrain")  # no origin/retrain yet: dvc pull only
    assert pending_stages(worker) == {}  # every output travelled, registered.json included
    assert (worker / "artifacts/registered.json").is_file()

    pairs, _ = scan_inbox(write_pair(tmp_path / "inbox" / "n1").parent)
    ingest(pairs, worker)
    run_dvc(["repro"], worker)
    commit = publish(worker, "retrain", "retrain: n1")
    assert commit and git(worker, "status", "--porcelain").strip() == ""

    team = _clone(origin, tmp_path / "team", "--branch", "retrain")
    assert git(team, "rev-parse", "HEAD").strip() == commit
    run_dvc(["pull"], team)
    assert pending_stages(team) == {}
    assert [f.pair for f in read_catalogue(team)] == ["n1", "n1"]
    assert (team / "incoming/n1/ir.png").is_file()

    other = _clone(origin, tmp_path / "other-worker")  # a second worker starts from the branch
    prepare(other, "retrain")
    assert git(other, "rev-parse", "HEAD").strip() == commit
    assert pending_stages(other) == {} and (other / "incoming/n1/vis.png").is_file()
    assert publish(other, "retrain", "nothing changed") is None


def test_publishing_refuses_a_dirty_worktree_before_any_change(origin, tmp_path):
    worker = _clone(origin, tmp_path / "worker")
    (worker / "notes.txt").write_text("unsaved work\n")
    with pytest.raises(PublishError, match=r"clean git worktree .*notes\.txt"):
        prepare(worker, "retrain")
    assert not (worker / "data/raw").exists()  # nothing pulled


def test_a_clone_without_origin_is_refused(tiny):
    run_dvc(["repro"], tiny)
    git(tiny, "add", "-A")
    git(tiny, *IDENTITY, "commit", "-qm", "pipeline run")
    with pytest.raises(PublishError, match="remote get-url origin"):
        prepare(tiny, "retrain")
