"""scripts/team_services.sh: real PostgreSQL, MLflow server and Prefect server in one folder."""

import pathlib
import urllib.request

import pytest

from tests.helpers.team_services import team_services


@pytest.mark.slow
def test_start_serves_all_three_and_stop_ends_them() -> None:
    with team_services() as svc:
        assert f"MLFLOW_TRACKING_URI={svc['mlflow']}" in svc["stdout"]
        for url in (f"{svc['mlflow']}/health", f"{svc['prefect']}/health"):
            assert urllib.request.urlopen(url, timeout=10).status == 200
        pg = pathlib.Path(svc["dir"]) / "pg"
        assert (pg / "PG_VERSION").is_file()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{svc['mlflow']}/health", timeout=5)
