"""The embedded store's file and its runs, checked when a command opens the store.

* A ``mlflow.db`` that is empty, not SQLite, or damaged is refused in one line naming the file
  and the way out, before MLflow touches it (it would print a database traceback, or silently
  create fresh tables in an empty file).
* Runs of this project left RUNNING by a process that is gone (a training or evaluation killed
  with ``-9``) are marked KILLED by the next command of any kind that opens the store.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import mlflow

from pipeline.core.errors import CoconetError
from pipeline.tracking import names

SQLITE_HEADER = b"SQLite format 3\x00"


class StoreFileError(CoconetError, RuntimeError):
    """The embedded store's database file is empty, not SQLite or damaged."""


def check_sqlite_store(db: Path) -> None:
    """Refuse an empty, foreign or damaged SQLite file (read only; nothing is created)."""
    way_out = (
        "restore it from a backup, or move it aside to start a fresh store (remove mlflow.db "
        "and mlartifacts/, then dvc repro); or set MLFLOW_TRACKING_URI"
    )
    with open(db, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header:
        raise StoreFileError(f"{db}: the MLflow store is an empty file; {way_out}")
    if header != SQLITE_HEADER:
        raise StoreFileError(f"{db}: not an SQLite database (damaged MLflow store); {way_out}")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            verdict = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreFileError(f"{db}: a damaged MLflow store ({exc}); {way_out}") from exc
    if verdict != "ok":
        raise StoreFileError(f"{db}: a damaged MLflow store ({verdict}); {way_out}")


def alive(pid: str) -> bool:
    """Whether a process with this id runs on this host (True where that cannot be told)."""
    if os.name != "posix":
        return True
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_tags(root: Path) -> dict[str, str]:
    """Which process owns a run: project root, host and process id."""
    return {
        names.OWNER_ROOT: str(root.resolve()),
        names.OWNER_HOST: socket.gethostname(),
        names.OWNER_PID: str(os.getpid()),
    }


def mark_stale_runs(uri: str, root: Path, found_by: str = "") -> list[str]:
    """Mark KILLED the runs of ``root`` (any experiment) still RUNNING on this host although
    their process is gone; returns their ids. Runs of other hosts or roots are left alone."""
    client = mlflow.MlflowClient(uri)
    owner = owner_tags(root)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    stale = []
    filter_string = (
        "attributes.status = 'RUNNING' and "
        f"tags.`{names.OWNER_ROOT}` = '{owner[names.OWNER_ROOT]}' and "
        f"tags.`{names.OWNER_HOST}` = '{owner[names.OWNER_HOST]}'"
    )
    for run in client.search_runs(experiments, filter_string, max_results=1000):
        pid = run.data.tags.get(names.OWNER_PID, "")
        if pid == owner[names.OWNER_PID] or alive(pid):
            continue
        reason = f"stale: its process {pid} is gone" + (
            f" (found by {found_by})" if found_by else ""
        )
        client.set_tag(run.info.run_id, names.KILLED_REASON, reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        stale.append(run.info.run_id)
    return stale
