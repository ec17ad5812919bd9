"""The ``retrain`` Prefect flow: ingest new inbox pairs, re-run what changed, register.

One run at a time: a file lock in ``.dvc/tmp`` (works without a server, also against a manual
``coconet retrain``) and, when served, a deployment concurrency limit of 1. A run that finds
the lock taken ends at once with status ``busy`` (``coconet retrain`` exits
:data:`EX_TEMPFAIL`). With no new pair and no pending DVC change (e.g. an edited catalogue,
params or code) the run ends quickly, saying there is nothing new. Otherwise the pairs are
ingested (:mod:`flows.inbox.ingestion`), the ``pipeline`` flow runs as a subflow (DVC re-runs
only the stages whose inputs changed; register promotes by rule) and, only after it succeeded, the
ingested pairs leave the inbox. A failure rolls everything back (:func:`undo`): the ingestion,
``dvc.lock``, the uncached outputs and, with ``dvc checkout``, every cached output DVC deleted
before the failing stage; ``dvc status`` must then read as it did before the run. The inbox is
left as it was; the champion alias moves only at the very end of a successful register stage.
A run that dies without rolling back (a killed worker) leaves its journal
(:mod:`flows.retrain_journal`); the next run rolls its changes back by the same rules first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from flows.dvc_runner import pending_stages, tracked_paths
from flows.inbox.ingestion import Snapshot, clear_inbox, ingest, plan, rollback
from flows.inbox.validation import (
    InboxPair,
    check_inbox_location,
    default_inbox,
    scan_inbox,
)
from flows.publish import PublishError, prepare, publish
from flows.repro import run_pipeline
from flows.retrain_journal import RetrainJournal
from flows.tasks import dvc_status, run_logger
from flows.workspace_backup import WorkspaceBackup
from pipeline.core.errors import CoconetError
from pipeline.core.params import PROJECT_ROOT
from pipeline.core.paths import ProjectPaths

LOCK_NAME = "coconet-retrain.lock"
EX_TEMPFAIL = 75  # sysexits.h: a temporary failure, the caller should try again later


class RollbackError(CoconetError, RuntimeError):
    """A failed retrain could not put the workspace back as it was."""


def lock_path(root: Path) -> Path:
    """The retrain lock file: inside ``.dvc/tmp`` (ignored by git and DVC)."""
    return ProjectPaths(root).dvc_tmp / LOCK_NAME


def try_lock(root: Path) -> FileLock | None:
    """The retrain lock, acquired without waiting; None when another retrain holds it."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def lock_is_held(root: Path) -> bool:
    """Whether another retrain holds the lock right now."""
    lock = try_lock(root)
    if lock is None:
        return True
    lock.release()
    return False


def busy_message(root: Path) -> str:
    """The one line a busy retrain ends with."""
    return (
        f"retrain busy: another retrain holds {lock_path(root)}; nothing was done "
        f"(exit {EX_TEMPFAIL}, EX_TEMPFAIL: try again later)"
    )


def undo(
    root: Path,
    snapshot: Snapshot | None,
    backup: WorkspaceBackup,
    before: dict[str, Any],
) -> None:
    """Roll a failed run back: the ingestion, then ``dvc.lock``, the uncached outputs and (by
    ``dvc checkout``) the cached ones; raises :class:`RollbackError` unless ``dvc status`` then
    reads as it did before the run (``before``)."""
    logger = run_logger()
    if snapshot is not None:
        rollback(snapshot)
    backup.restore(log=logger.info)
    after = pending_stages(root)
    if after != before:
        differ = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        raise RollbackError(
            f"dvc status differs from before the run for {', '.join(differ)}: "
            "see `dvc status`, restore with `dvc checkout`"
        )


@task(name="scan-inbox", cache_policy=NONE)
def scan(inbox: str, project_dir: str) -> dict[str, Any]:
    """Verify the inbox pairs and sort them into new, already ingested and rejected."""
    logger = run_logger()
    pairs, rejected = scan_inbox(Path(inbox))
    new, duplicate, conflicts = plan(pairs, Path(project_dir))
    rejected.update(conflicts)
    for name, reason in rejected.items():
        logger.warning("inbox pair %s rejected (left in place): %s", name, reason)
    logger.info(
        "inbox %s: %d new pair(s), %d already ingested, %d rejected",
        inbox,
        len(new),
        len(duplicate),
        len(rejected),
    )
    return {"new": new, "duplicate": duplicate, "rejected": rejected}


def recover(root: Path) -> str | None:
    """Roll back a retrain that died without doing so (its journal is still there); returns
    what happened, None when every earlier run finished."""
    journal = RetrainJournal.left_behind(root)
    if journal is None:
        return None
    folder, snapshot_file = Path(journal.backup), Path(journal.snapshot)
    if (folder / "backup.json").is_file():  # else its rollback had finished: only the end left
        snapshot = Snapshot.load(snapshot_file) if snapshot_file.is_file() else None
        undo(root, snapshot, WorkspaceBackup.load(root, folder), journal.before)
    RetrainJournal.end(root)
    message = f"{journal.describe()}: its changes were rolled back to the dvc.lock before it"
    run_logger().warning(message)
    return message


@task(name="ingest", cache_policy=NONE)
def ingest_task(pairs: list[InboxPair], project_dir: str, journal: str) -> Snapshot:
    """Copy the new pairs into the DVC-tracked dataset (see :mod:`flows.inbox.ingestion`)."""
    snapshot = ingest(pairs, Path(project_dir), Path(journal))
    run_logger().info("ingested %s", ", ".join(p.name for p in pairs))
    return snapshot


@flow(name="coconet-retrain")
def retrain(
    project_dir: str | None = None,
    inbox: str | None = None,
    download_retries: int = 2,
    publish: str | None = None,
) -> dict[str, Any]:
    """Retrain on new data: inbox pairs or any pending DVC change; nothing new -> quick exit.
    The project is ``project_dir``, else ``$COCONET_ROOT`` (set by ``coconet worker``), else the
    clone this code runs from. ``publish``: a git branch to share the result on
    (:mod:`flows.publish`)."""
    root = Path(project_dir or os.environ.get("COCONET_ROOT") or PROJECT_ROOT).resolve()
    inbox_dir = Path(inbox) if inbox else default_inbox(root)
    check_inbox_location(inbox_dir, root, tracked_paths(root))
    logger = run_logger()
    lock = try_lock(root)
    if lock is None:
        logger.warning(busy_message(root))
        return {"status": "busy", "lock": str(lock_path(root))}
    try:
        recovered = recover(root)
        if publish:
            prepare(root, publish)
        found = scan(str(inbox_dir), str(root))
        new, duplicate = found["new"], found["duplicate"]
        before = dvc_status(str(root))
        if not new and not before:
            logger.info("nothing new: no new inbox pairs and every DVC stage is up to date")
            _clear(duplicate)
            return {"status": "nothing new", "rejected": found["rejected"], "recovered": recovered}
        if before:
            logger.info("pending DVC changes: %s", ", ".join(before))
        backup = WorkspaceBackup.save(root)
        journal = RetrainJournal.begin(
            root, str(flow_run.id or "outside a flow"), backup.folder, before
        )
        snapshot = None
        try:
            snapshot = ingest_task(new, str(root), journal.snapshot) if new else None
            result = run_pipeline(project_dir=str(root), download_retries=download_retries)
        except BaseException as exc:
            try:
                undo(root, snapshot, backup, before)
            except Exception as failed:
                summary = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                logger.error("rollback incomplete: %s", failed)
                raise RollbackError(
                    f"retrain failed ({summary}); rollback incomplete: {failed}"
                ) from exc
            RetrainJournal.end(root)
            logger.error("retrain failed: everything rolled back to dvc.lock, inbox left as it was")
            raise
        RetrainJournal.end(root)  # before the backup goes: a journal always has its backup
        backup.discard()
        _clear(new + duplicate)
        done = {
            "status": "retrained",
            "recovered": recovered,
            "ingested": [p.name for p in new],
            "rejected": found["rejected"],
            "ran": result["ran"],
            "registered": result["registered"],
        }
        if publish:
            done["published"] = publish_task(str(root), publish, commit_message(done))
        return done
    finally:
        lock.release()


def commit_message(done: dict[str, Any]) -> str:
    """The published commit's message: what was ingested, what ran, what was registered."""
    ingested = ", ".join(done["ingested"]) or "no new pairs"
    lines = [f"retrain: {ingested}", "", f"stages run: {', '.join(done['ran']) or 'none'}"]
    if reg := done.get("registered"):
        lines.append(f"registered: {reg['name']} v{reg['version']} ({reg.get('reason', '')})")
    if flow_run.id:
        lines.append(f"prefect flow run: {flow_run.id}")
    return "\n".join(lines)


@task(name="publish", cache_policy=NONE)
def publish_task(project_dir: str, branch: str, message: str) -> str | None:
    """Commit, ``dvc push`` and push to ``origin branch``; the run succeeded either way, so a
    failure here says what is left to do by hand."""
    root = Path(project_dir)
    try:
        commit = publish(root, branch, message)
    except CoconetError as exc:
        raise PublishError(
            f"retrain succeeded, but publishing failed: {exc}; finish by hand in {root}: "
            f"`dvc push && git push origin HEAD:{branch}`"
        ) from exc
    run_logger().info("published %s on %s", commit or "nothing (no change)", branch)
    return commit


def _clear(pairs: list[InboxPair]) -> None:
    """Remove ingested pairs from the inbox; what cannot go is logged, never raised."""
    for problem in clear_inbox(pairs):
        run_logger().warning("inbox: %s", problem)
