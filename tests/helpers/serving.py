"""`mlflow models serve` of ``models:/coconet@champion`` for a test: started on a free port in
its own session, waited for until ``/ping`` answers, stopped with everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_champion(
    env: dict[str, str], log: Path, cwd: Path | None = None, timeout: float = 300
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yield the server's base URL and process once it answers ``/ping``."""
    port = free_port()
    cli = Path(sys.executable).parent / "mlflow"
    path = os.pathsep.join([str(cli.parent), env.get("PATH", "")])  # uvicorn beside it
    command = [str(cli), "models", "serve", "-m", "models:/coconet@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, cwd=cwd, env={**env, "PATH": path, "MALLOC_ARENA_MAX": "1"},  # as the README
            stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, f"server exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"server not up: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        yield f"http://127.0.0.1:{port}", server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
