"""Retrains on workers (flows.work_pool): the deployment on a work pool of a real Prefect server
on PostgreSQL (scripts/team_services.sh), two `coconet worker` processes polling it, the tiny
DVC project as the workers' clone (slow: a crash is detected after heartbeats stop)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.dvc_runner import pending_stages, run_dvc
from flows.inbox.ingestion import read_catalogue
from flows.work_pool import SILENCE_S
from tests.helpers.dvc_project import write_pair
from tests.helpers.team_services import team_services
from tests.helpers.tiny_project import coconet

pytestmark = pytest.mark.slow
DEPLOYMENT = "coconet-retrain/trial"
TERMINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


@pytest.fixture(scope="module")
def prefect_url() -> Iterator[str]:
    with team_services() as services, temporary_settings({PREFECT_API_URL: services["prefect"]}):
        yield services["prefect"]


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    bin_dir = str(Path(sys.executable).parent)
    return env | {
        "PREFECT_API_URL": url,
        "PATH": os.pathsep.join([bin_dir, env.get("PATH", "")]),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "DO_NOT_TRACK": "1",
    }


@contextlib.contextmanager
def _workers(url: str, root: Path, logs: Path, names: list[str]) -> Iterator[dict]:
    procs = {}
    try:
        for name in names:
            log = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            procs[name] = subprocess.Popen(
                [*coconet(root), "worker", "--pool", "trial", "--name", name, "--root", str(root)],
                env=_env(url), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        yield procs
    finally:
        for proc in procs.values():
            _kill_tree(proc.pid)


def _kill_tree(pid: int) -> None:
    """The worker and everything it started (its flow runs run in their own sessions): what a
    machine that goes away takes with it."""
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for proc in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def _wait(flow_run_id, states=TERMINAL, timeout=240.0) -> FlowRun:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.type in states:
                return run
            assert time.monotonic() < deadline, f"flow run {flow_run_id}: {run.state}"
            time.sleep(2)


def _logs(flow_run_id) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in found)


def _trigger():
    return run_deployment(DEPLOYMENT, timeout=0).id


def _picked_by(logs: Path, flow_run_id) -> list[str]:
    """The workers that ran the flow run. Two workers polling at once may both try to submit
    it; the server lets one through and aborts the other ("Aborted submission of flow run
    '<id>'", the other worker's log), so that worker did not run it."""
    aborted = f"Aborted submission of flow run '{flow_run_id}'"
    return [
        p.stem
        for p in logs.glob("*.log")
        if str(flow_run_id) in (text := p.read_text()) and aborted not in text
    ]


def test_workers_run_retrains_one_at_a_time_and_survive_a_killed_worker(
    prefect_url, tiny, tmp_path
):
    run_dvc(["repro"], tiny)  # the workers' clone starts up to date
    deploy = subprocess.run(
        [*coconet(tiny), "schedule", "--pool", "trial", "--name", "trial",
         "--cron", "0 3 1 1 *", "--root", str(tiny)],
        env=_env(prefect_url), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stderr
    assert "coconet worker --pool trial" in deploy.stdout
    logs = tmp_path / "logs"
    logs.mkdir()
    with _workers(prefect_url, tiny, logs, ["w1", "w2"]) as workers:
        write_pair(tiny / "inbox" / "n1")
        first = _wait(_trigger())
        assert first.state.type == StateType.COMPLETED, _logs(first.id)
        assert len(_picked_by(logs, first.id)) == 1  # exactly one worker ran it
        waited = (first.start_time - first.created).total_seconds()
        print(f"trigger to flow run start: {waited:.1f} s (README: team mode numbers)")
        assert "ingested n1" in _logs(first.id)

        write_pair(tiny / "inbox" / "n2")
        a, b = _trigger(), _trigger()  # overlapping triggers: the second waits for the first
        runs = sorted((_wait(a), _wait(b)), key=lambda r: r.start_time)
        assert all(r.state.type == StateType.COMPLETED for r in runs)
        assert runs[0].end_time <= runs[1].start_time  # never two retrains at once
        assert not any("retrain busy" in _logs(r.id) for r in runs)  # the limit, not the lock

        write_pair(tiny / "inbox" / "n3")
        (tiny / ".hang-register").touch()
        hung = _trigger()
        deadline = time.monotonic() + 180
        while not (tiny / ".hanging-register").exists():
            assert time.monotonic() < deadline, _logs(hung)
            time.sleep(1)
        (owner,) = _picked_by(logs, hung)
        _kill_tree(workers[owner].pid)
        crashed = _wait(hung, timeout=SILENCE_S + 150)
        assert crashed.state.type == StateType.CRASHED and "heartbeat" in crashed.state.message
        (tiny / ".hang-register").unlink()

        after = _wait(_trigger())  # the surviving worker; the slot was freed by the crash
        assert after.state.type == StateType.COMPLETED, _logs(after.id)
        assert f"{hung} " in _logs(after.id) and "rolled back" in _logs(after.id)
        assert _picked_by(logs, after.id) == [next(n for n in workers if n != owner)]
    assert pending_stages(tiny) == {}
    assert sorted({f.pair for f in read_catalogue(tiny)}) == ["n1", "n2", "n3"]
    assert not list((tiny / "inbox").iterdir())
