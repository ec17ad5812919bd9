"""Which process owns an MLflow run (project root, host, process id) and whether it still runs;
no MLflow import, so the light registry read (:mod:`pipeline.tracking.sqlite_registry`) can ask
too."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pipeline.tracking import names


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


def is_stale(pid: str, owner: dict[str, str]) -> bool:
    """Whether a RUNNING run of ``owner``'s root and host, recorded with process ``pid``, is
    stale: another process than this one, and no longer running."""
    return pid != owner[names.OWNER_PID] and not alive(pid)


def owned_running_filter(owner: dict[str, str]) -> str:
    """MLflow's search filter for the RUNNING runs of ``owner``'s root on its host."""
    return (
        "attributes.status = 'RUNNING' and "
        f"tags.`{names.OWNER_ROOT}` = '{owner[names.OWNER_ROOT]}' and "
        f"tags.`{names.OWNER_HOST}` = '{owner[names.OWNER_HOST]}'"
    )
