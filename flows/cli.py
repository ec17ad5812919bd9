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
PublishOption = Annotated[
    str | None,
    typer.Option(
        "--publish",
        metavar="BRANCH",
        help="Share the result: start from origin/BRANCH (fast-forward, dvc pull; needs a clean "
        "worktree), then commit the changes, dvc push and git push to origin BRANCH.",
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
def retrain(
    inbox: InboxOption = None, publish: PublishOption = None, root: RootOption = None
) -> None:
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
        result = retrain_flow(str(project), str(inbox) if inbox else None, publish=publish)
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
    if result.get("published"):
        typer.echo(f"  published {result['published']} on origin {publish}")


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
    pool: Annotated[
        str | None,
        typer.Option(
            "--pool",
            help="Deploy to this Prefect work pool (process type, created if missing) and "
            "return: workers (`coconet worker --pool NAME`) run the retrains.",
        ),
    ] = None,
    publish: PublishOption = None,
    root: RootOption = None,
) -> None:
    """Retrain on a schedule (needs a Prefect server).

    Without --pool: serve the retrain flow from this process until interrupted. With --pool:
    deploy it to a work pool and return; the retrains run on whichever worker polls that pool,
    in the worker's clone, with the inbox given here (a path on the worker) or the worker's
    default inbox. Either way one run at a time; a run whose worker dies is marked CRASHED
    (heartbeats) and the next one rolls its changes back. Start a server with
    `prefect server start` (or scripts/team_services.sh start) and export
    PREFECT_API_URL=http://127.0.0.1:4200/api.
    """
    from flows.env import telemetry_off

    telemetry_off()
    from flows.schedule import ScheduleError, serve
    from pipeline.core.params import PROJECT_ROOT

    try:
        if pool is None:
            serve((root or PROJECT_ROOT).resolve(), inbox, cron, interval, name, publish)
            return
        from flows.work_pool import deploy

        deployment = deploy(pool, cron, interval, str(inbox) if inbox else None, name, publish)
    except ScheduleError as exc:
        fail(str(exc), 2)
    typer.echo(f"deployed coconet-retrain/{name} ({deployment}) to work pool {pool!r}")
    typer.echo(f"start a worker in each clone that may retrain: coconet worker --pool {pool}")


@app.command()
def worker(
    pool: Annotated[str, typer.Option("--pool", help="The work pool to poll.")],
    name: Annotated[str | None, typer.Option("--name", help="Worker name.")] = None,
    root: RootOption = None,
) -> None:
    """Run retrains deployed to a work pool (`coconet schedule --pool`) in this clone.

    A Prefect process worker (`prefect worker start --type process`) whose flow runs retrain
    the project at --root (default: this clone) and send heartbeats every 30 s, so a run whose
    worker dies is marked CRASHED. Needs PREFECT_API_URL; stop it with Ctrl-C.
    """
    from flows.env import telemetry_off

    telemetry_off()
    from flows.schedule import ScheduleError
    from flows.work_pool import start_worker
    from pipeline.core.params import PROJECT_ROOT

    try:
        start_worker(pool, (root or PROJECT_ROOT).resolve(), name)
    except ScheduleError as exc:
        fail(str(exc), 2)
