"""Real team services (scripts/team_services.sh) on free ports, in a folder postgres reaches."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "team_services.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def team_services() -> Iterator[dict[str, str]]:
    """Start PostgreSQL, MLflow and Prefect servers; yield their URLs and folder; stop them."""
    ports = {k: str(_free_port()) for k in ("PG", "MLFLOW", "PREFECT")}
    env = {**os.environ, **{f"COCONET_{k}_PORT": v for k, v in ports.items()}}
    root = pathlib.Path(tempfile.mkdtemp())  # not tmp_path: the postgres user must reach it
    root.chmod(0o755)
    services = root / "services"
    try:
        out = subprocess.run(
            [str(SCRIPT), "start", str(services)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        yield {
            "dir": str(services),
            "stdout": out.stdout,
            "mlflow": f"http://127.0.0.1:{ports['MLFLOW']}",
            "prefect": f"http://127.0.0.1:{ports['PREFECT']}/api",
        }
    finally:
        subprocess.run([str(SCRIPT), "stop", str(services)], env=env, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
