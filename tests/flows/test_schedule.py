"""Scheduled retraining for real: a Prefect server on 127.0.0.1, `coconet schedule --interval`
serving the retrain flow against a shrunk project copy, a pair dropped into the inbox, and a
new model version with its lineage at the end; then a `coconet retrain` whose download fails
and is rolled back. Slow (a few minutes): the whole pipeline runs twice (once by `dvc repro`,
once by the scheduled flow run)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.imageio import write_image
from tests.helpers.mirror import mirror_dir
from tests.helpers.tiny_project import coconet, make_tiny_project, project_env

PREFECT = str(Path(sys.executable).parent / "prefect")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(mirror_dir() is None, reason="no data mirror (../shared/mirror)"),
    pytest.mark.timeout(1200),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, procs=(), step: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc, log in procs:
            if proc.poll() is not None:
                pytest.fail(f"{what}: process exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(step)
    tails = "\n".join(log.read_text()[-3000:] for _, log in procs)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _drop_pair(inbox: Path, name: str) -> None:
    """Write a pair under a hidden name, then rename it: a scan never sees half a pair."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # new bytes per name: no duplicate
    tmp = inbox / f".{name}"
    tmp.mkdir(parents=True)
    ir = rng.random((96, 128)).astype(np.float32)
    write_image(tmp / "ir.png", ir)
    write_image(tmp / "vis.png", np.clip(1 - ir + 0.1 * rng.random((96, 128)), 0, 1))
    tmp.rename(inbox / name)


def _versions(uri: str) -> list:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(uri).search_model_versions("name = 'coconet'")
    except MlflowException:
        return []


def _files(root: Path, *names: str) -> dict[str, str]:
    """sha256 of every file under each of ``names`` (files or folders) in ``root``."""
    import hashlib

    paths = [
        p for n in names for p in ([root / n] if (root / n).is_file() else (root / n).rglob("*"))
    ]
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(paths)
        if p.is_file()
    }


def _active_runs(api: str) -> int:
    """Flow runs the server holds as pending or running (a runner's child may outlive it)."""
    body = json.dumps({"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING"]}}}}).encode()
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return len(json.load(response))


def _failing_download_rolls_back(root: Path, env: dict[str, str], empty: Path, api: str) -> None:
    """`coconet retrain` with a new pair while every data file is missing (empty mirror and
    cache): the download stage fails after DVC deleted data/raw and data/weights; the retrain
    puts them, the catalogue, params and dvc.lock back and leaves the pair in the inbox."""
    from flows.retrain import lock_is_held

    # a scheduled run started just before `coconet schedule` stopped may still be starting up
    # (not yet holding the lock) or running: wait until the server has none and the lock is free
    _wait(lambda: not _active_runs(api), 300, "the last scheduled run to end")
    empty.mkdir()
    for _ in range(10):  # a run still starting up may take the lock first: exit 75, try again
        _wait(lambda: not lock_is_held(root), 300, "the retrain lock to be released")
        watched = ("data", "reports", "artifacts", "params.yaml", "dvc.lock", "pipeline/catalogue")
        before = _files(root, *watched)
        if not (root / "inbox/drop2").exists():
            _drop_pair(root / "inbox", "drop2")
        failed = subprocess.run(
            [*coconet(root), "retrain"],
            cwd=root,
            env={**env, "COCONET_MIRROR": str(empty), "COCONET_CACHE": str(empty)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if failed.returncode != 75:
            break
    last = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert last.startswith("error: DvcError: dvc repro --single-item download failed"), last
    assert "no such file in the mirror" in last
    assert _files(root, *watched) == before
    assert not (root / "incoming/drop2").exists() and (root / "inbox/drop2/ir.png").is_file()


def test_scheduled_retrain_registers_a_new_version(tmp_path):
    from pipeline.tracking import lineage

    root = make_tiny_project(tmp_path / "proj")
    env = project_env(root, tmp_path / "cache")
    subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "-q"],
        cwd=root,
        env=env,
        check=True,
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert [v.version for v in _versions(uri)] == [1]

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = {
        **env,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    server_log = tmp_path / "server.log"
    serve_log = tmp_path / "serve.log"
    with open(server_log, "w") as slog, open(serve_log, "w") as rlog:
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=slog,
            stderr=subprocess.STDOUT,
        )
        serving = None
        try:
            _wait(lambda: _healthy(api), 240, "the Prefect server", [(server, server_log)])
            client_env = {
                **server_env,
                "PREFECT_API_URL": api,
                "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            }
            serving = subprocess.Popen(
                [*coconet(root), "schedule", "--interval", "5"],
                cwd=root,
                env=client_env,
                stdout=rlog,
                stderr=subprocess.STDOUT,
            )
            procs = [(server, server_log), (serving, serve_log)]
            _wait(lambda: "nothing new" in serve_log.read_text(), 300, "a first run", procs)
            _drop_pair(root / "inbox", "drop1")
            _wait(lambda: len(_versions(uri)) >= 2, 900, "a new model version", procs, 5)
            _wait(lambda: not (root / "inbox/drop1").exists(), 120, "the inbox cleared", procs)
            _stop(serving)
            with urllib.request.urlopen(
                f"{api}/deployments/name/coconet-retrain/coconet-retrain", timeout=10
            ) as response:
                deployment = json.load(response)
            assert deployment["paused"] is False  # stopping the server process did not pause it
            _failing_download_rolls_back(root, client_env, tmp_path / "empty", api)
        finally:
            if serving is not None:
                _stop(serving)
            _stop(server)

    chain = lineage.collect("models:/coconet/2", uri)
    assert chain["model"]["decision"] in {"champion", "challenger"}
    inbox = {d["name"]: d for d in chain["datasets"]}["inbox"]
    assert inbox["splits"] == {"train": 1}
    assert inbox["pairs"][0]["ir_url"] == "incoming/drop1/ir.png"
    first = lineage.collect("models:/coconet/1", uri)
    assert chain["dvc"]["download"]["data/raw"] != first["dvc"]["download"]["data/raw"]
    registered = json.loads((root / "artifacts/registered.json").read_text())
    assert registered["version"] == "2"
    verify = subprocess.run(
        [*coconet(root), "lineage", "models:/coconet/2", "--verify"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]
    assert "DRIFT" not in verify.stdout
