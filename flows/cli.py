"""``coconet`` commands driving the Prefect flows: run, retrain, schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import RootOption, app, fail

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-S",
        help="Compose params.yaml from conf/ with this override first, as `dvc exp run -S` does "
        "(e.g. -S schedule=quick, -S train.lr=0.001).",
    ),
]
InboxOption = Annotated[
    Path | None,
    typer.Option("--inbox", help="Inbox folder (default $COCONET_INBOX or <root>/inbox)."),
]


def _flow_failed(exc: Exception) -> None:
    fail(f"{type(exc).__name__}: {exc}")


@app.command()
def run(
    overrides: SetOption = None,
    retries: Annotated[int, typer.Option("--retries", help="Retries of the download.")] = 2,
    root: RootOption = None,
) -> None:
    """Run the pipeline as a Prefect flow: each DVC stage in order via `dvc repro -s <stage>`.

    Up-to-date stages are skipped by DVC. With -S/--set, params.yaml is first composed from conf/
    with the overrides exactly as `dvc exp run -S` composes it (validated; the file is put back
    if not); without, params.yaml runs as it is (like `dvc repro`). Without PREFECT_API_URL the
    flow runs against Prefect's temporary local server.
    """
    from flows.env import telemetry_off

    telemetry_off()
    from flows.overrides import compose_params
    from flows.repro import run_pipeline
    from pipeline.core.errors import CoconetError
    from pipeline.core.params import PROJECT_ROOT, load_params

    project = (root or PROJECT_ROOT).resolve()
    try:  # params first, before Prefect starts: a bad override or file is one line
        applied = compose_params(project, overrides) if overrides else {}
        load_params(project / "params.yaml")
    except CoconetError as exc:
        fail(str(exc))
    try:
        result = run_pipeline(str(project), [], retries, composed=applied)
    except CoconetError as exc:
        _flow_failed(exc)
    typer.echo(result["report"])


@app.command()
def retrain(inbox: InboxOption = None, root: RootOption = None) -> None:
    """Retrain once on new data: ingest inbox pairs, re-run what changed, register, promote.

    Inbox layout: inbox/<pair>/ir.<ext> + vis.<ext> (+ optional mask.<ext>), same sizes.

    Ends at once when there is nothing new (exit 0) or when another retrain holds the lock
    (exit 75, EX_TEMPFAIL: a scheduler should try again later). A failed run rolls the
    workspace back to the last dvc.lock and leaves the inbox and the champion as they were.
    """
    from flows.env import telemetry_off

    telemetry_off()
    from flows.dvc_runner import tracked_paths
    from flows.inbox.validation import check_inbox_location, default_inbox
    from flows.retrain import EX_TEMPFAIL, busy_message, lock_is_held
    from flows.retrain import retrain as retrain_flow
    from pipeline.core.errors import CoconetError
    from pipeline.core.params import PROJECT_ROOT, load_params

    project = (root or PROJECT_ROOT).resolve()
    if lock_is_held(project):  # before starting Prefect: a busy run costs nothing
        fail(busy_message(project), EX_TEMPFAIL)
    try:
        check_inbox_location(inbox or default_inbox(project), project, tracked_paths(project))
        load_params(project / "params.yaml")  # a broken params file: one line, before Prefect
    except CoconetError as exc:
        fail(str(exc))
    try:
        result = retrain_flow(str(project), str(inbox) if inbox else None)
    except CoconetError as exc:
        _flow_failed(exc)
    if result["status"] == "busy":  # taken between the check above and the flow's own try
        fail(busy_message(project), EX_TEMPFAIL)
    typer.echo(f"retrain: {result['status']}")
    for name, reason in (result.get("rejected") or {}).items():
        typer.echo(f"  rejected {name}: {reason}")
    if result.get("registered") and result["status"] == "retrained":
        reg = result["registered"]
        typer.echo(f"  {reg['name']} v{reg['version']} -> {reg['alias']}: {reg['reason']}")


@app.command()
def schedule(
    cron: Annotated[
        str | None, typer.Option("--cron", help='Cron schedule, e.g. "0 3 * * 1".')
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", help="Run every SECONDS instead.")
    ] = None,
    inbox: InboxOption = None,
    name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "coconet-retrain",
    root: RootOption = None,
) -> None:
    """Serve the retrain flow on a schedule until interrupted (needs a Prefect server).

    Start one with `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api
    (or a remote server's URL). One run at a time; stopping this process does not pause the
    schedule. Telemetry is off unless PREFECT_SERVER_ANALYTICS_ENABLED / DO_NOT_TRACK are set.
    """
    from flows.env import telemetry_off

    telemetry_off()
    from flows.schedule import ScheduleError, serve
    from pipeline.core.params import PROJECT_ROOT

    try:
        serve((root or PROJECT_ROOT).resolve(), inbox, cron, interval, name)
    except ScheduleError as exc:
        fail(str(exc), 2)
