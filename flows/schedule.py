"""Serve the ``retrain`` flow on a schedule (``coconet schedule``).

Schedules live on a Prefect server: start one with ``prefect server start`` (SQLite under
``$PREFECT_HOME``, ``~/.prefect`` by default) and point the client at it with
``PREFECT_API_URL=http://127.0.0.1:4200/api`` (any remote server or Prefect Cloud works the
same way). Prefect's temporary in-process server is refused: it disappears with the process
and cannot run schedules. The deployment allows one run at a time (``global_limit=1``, on top
of the retrain file lock) and is not paused when the serve process stops
(``pause_on_shutdown=False``), so restarting ``coconet schedule`` resumes it.
"""

from __future__ import annotations

from pathlib import Path

from prefect.settings import get_current_settings

from flows.retrain import retrain
from pipeline.core.errors import CoconetError

DEPLOYMENT = "coconet-retrain"


class ScheduleError(CoconetError, RuntimeError):
    """No usable Prefect server or no schedule given."""


def api_url() -> str | None:
    """The Prefect API the client talks to (``PREFECT_API_URL`` or the active profile)."""
    url = get_current_settings().api.url
    return str(url) if url else None


def check_schedule(cron: str | None, interval: float | None) -> None:
    """Exactly one of a cron string and a positive interval."""
    if bool(cron) == bool(interval):
        raise ScheduleError("give exactly one of --cron or --interval")
    if interval is not None and interval <= 0:
        raise ScheduleError("--interval must be positive")


def require_server() -> None:
    """Refuse Prefect's temporary in-process server: schedules and workers need a real one."""
    if not api_url():
        raise ScheduleError(
            "schedules and workers need a Prefect server: run `prefect server start` (or "
            "scripts/team_services.sh start) and set PREFECT_API_URL=http://127.0.0.1:4200/api "
            "(or the URL of a remote server)"
        )


def serve(
    project_dir: Path,
    inbox: Path | None = None,
    cron: str | None = None,
    interval: float | None = None,
    name: str = DEPLOYMENT,
    publish: str | None = None,
) -> None:
    """Create (or update) the deployment with its schedule and run its flow runs until
    interrupted."""
    check_schedule(cron, interval)
    require_server()

    parameters = {"project_dir": str(project_dir.resolve())}
    if inbox is not None:
        parameters["inbox"] = str(inbox.resolve())
    if publish:
        parameters["publish"] = publish
    retrain.serve(
        name=name,
        cron=cron,
        interval=interval,
        parameters=parameters,
        pause_on_shutdown=False,
        global_limit=1,
        limit=1,
    )
