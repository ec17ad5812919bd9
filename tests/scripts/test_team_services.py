"""scripts/team_services.sh: real PostgreSQL, MLflow server and Prefect server in one folder."""

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import urllib.request

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "team_services.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_start_serves_all_three_and_stop_ends_them() -> None:
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
        assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{ports['MLFLOW']}" in out.stdout
        for url in (
            f"http://127.0.0.1:{ports['MLFLOW']}/health",
            f"http://127.0.0.1:{ports['PREFECT']}/api/health",
        ):
            assert urllib.request.urlopen(url, timeout=10).status == 200
        assert (services / "pg" / "PG_VERSION").is_file()
    finally:
        subprocess.run([str(SCRIPT), "stop", str(services)], env=env, timeout=120)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{ports['MLFLOW']}/health", timeout=5)
    assert not (services / "pg" / "postmaster.pid").exists()
    shutil.rmtree(root)
