"""Retraining on workers: the ``retrain`` flow deployed to a Prefect work pool
(``coconet schedule --pool NAME``), and a process worker that runs it (``coconet worker``).

The deployment names the flow by module path (``flows.retrain.retrain``): a worker runs it from
its own clone of the project (where ``uv sync`` installed it), so nothing is copied or built.
The project and its inbox are the worker's (``coconet worker --root``, default the clone the
worker runs from; the inbox ``<root>/inbox`` or ``$COCONET_INBOX`` there). One run at a time:
the deployment's concurrency limit is 1 (``ENQUEUE``: a second trigger waits for the first,
whichever worker picks it up), on top of the retrain lock of each clone.

Crashed workers: a flow run whose worker dies sends no more heartbeats (workers started here
send one every :data:`HEARTBEAT_S` seconds). An automation per deployment
(:func:`automation_name`) marks such a run CRASHED after :data:`SILENCE_S` seconds of silence,
which releases its concurrency slot; the next retrain on that clone rolls back what the dead
one left (:mod:`flows.retrain_journal`).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    StateType,
)
from prefect.deployments.runner import EntrypointType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.utilities.asyncutils import run_coro_as_sync

from flows.retrain import retrain
from flows.schedule import ScheduleError, check_schedule, require_server

POOL_TYPE = "process"
HEARTBEAT_S = 30  # Prefect's minimum flow run heartbeat interval
SILENCE_S = 3 * HEARTBEAT_S + 15
AUTOMATION = "coconet: mark silent retrain runs crashed"  # + ": <flow>/<deployment>"
TERMINAL_EVENTS = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}


async def _ensure_pool(name: str) -> None:
    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=name, type=POOL_TYPE))
            return
    if pool.type != POOL_TYPE:
        raise ScheduleError(f"work pool {name!r} is of type {pool.type!r}, not {POOL_TYPE!r}")


def automation_name(deployment: str) -> str:
    """One automation per deployment: deploying another never re-targets this one's."""
    return f"{AUTOMATION}: {retrain.name}/{deployment}"


def crash_automation(deployment_id: UUID, deployment: str) -> Automation:
    """Mark a run of the deployment CRASHED when its heartbeats stop before it ended."""
    return Automation(
        name=automation_name(deployment),
        description=f"Runs of deployment {deployment_id} whose worker died (no heartbeat for "
        f"{SILENCE_S} s, no final state) become CRASHED, which frees the concurrency slot.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *TERMINAL_EVENTS},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            match_related={"prefect.resource.id": f"prefect.deployment.{deployment_id}"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=SILENCE_S),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {SILENCE_S} s: the worker running it died",
            )
        ],
    )


def _ensure_automation(deployment_id: UUID, deployment: str) -> None:
    wanted = crash_automation(deployment_id, deployment)
    try:
        existing = Automation.read(name=wanted.name)
    except ValueError:  # none of that name yet
        wanted.create()
        return
    existing.trigger, existing.actions = wanted.trigger, wanted.actions
    existing.description, existing.enabled = wanted.description, True
    existing.update()


def deploy(
    pool: str,
    cron: str | None = None,
    interval: float | None = None,
    inbox: str | None = None,
    name: str = "coconet-retrain",
    publish: str | None = None,
) -> UUID:
    """Create or update the retrain deployment on ``pool`` (a process pool, created if
    missing) with its schedule, concurrency limit 1 and the crash-marking automation."""
    check_schedule(cron, interval)
    require_server()
    run_coro_as_sync(_ensure_pool(pool))
    deployment_id = retrain.deploy(
        name=name,
        work_pool_name=pool,
        cron=cron,
        interval=interval,
        parameters={k: v for k, v in (("inbox", inbox), ("publish", publish)) if v},
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        entrypoint_type=EntrypointType.MODULE_PATH,
        build=False,
        push=False,
        print_next_steps=False,
    )
    _ensure_automation(deployment_id, name)
    return deployment_id


def worker_command(pool: str, name: str | None) -> list[str]:
    """``prefect worker start`` for a process worker on ``pool`` (this environment's prefect)."""
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect), "worker", "start", "--pool", pool, "--type", POOL_TYPE]
    return [*command, "--name", name] if name else command


def start_worker(pool: str, root: Path, name: str | None = None) -> None:
    """Become a process worker polling ``pool`` for retrain runs of the project at ``root``
    (replaces this process: its signals and exit status are the worker's)."""
    require_server()
    os.environ["COCONET_ROOT"] = str(root)
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_S))
    command = worker_command(pool, name)
    os.execv(command[0], command)
