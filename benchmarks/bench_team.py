"""Registry reads of ``models:/coconet@champion``: the team's MLflow server (PostgreSQL, proxied
artifacts; started here by ``scripts/team_services.sh``) against the embedded SQLite store.

One random-weight CoCoNet is registered in both stores with the alias ``champion``; then, each
the median of ``--runs`` calls in this process (imports done):

* the alias lookup by MLflow's client (``get_model_version_by_alias``);
* what ``coconet fuse --model models:/coconet@champion`` reads: the version and its model files
  (SQLite: the local folder, :mod:`pipeline.tracking.sqlite_registry`; server: the model files
  fetched over HTTP, :mod:`pipeline.tracking.rest_registry`);
* MLflow's own ``download_artifacts`` of the model (``mlflow models serve`` reads it this way).

    uv run python benchmarks/bench_team.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URI = "models:/coconet@champion"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _median(call: Callable[[], object], runs: int) -> float:
    call()  # warm: connections, caches
    times = []
    for _ in range(runs):
        tic = time.perf_counter()
        call()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _register(tracking_uri: str, artifacts: str | None) -> None:
    import mlflow
    import torch

    from models.coconet import CoCoNet
    from pipeline.tracking import pyfunc_model

    mlflow.set_tracking_uri(tracking_uri)
    torch.manual_seed(0)
    model = CoCoNet(vgg_weights="random").eval()
    experiment = mlflow.create_experiment("bench-team", artifacts)
    with mlflow.start_run(experiment_id=experiment) as run:
        pyfunc_model.log_model(model, {"vgg_weights": "random"})
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "coconet")
    mlflow.MlflowClient().set_registered_model_alias("coconet", "champion", version.version)


def _reads(project: Path, runs: int, work: Path) -> dict[str, float]:
    import mlflow
    from mlflow.artifacts import download_artifacts

    from pipeline.tracking import rest_registry, sqlite_registry

    served = os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http")
    client = mlflow.MlflowClient()
    counter = iter(range(10**6))

    def fuse_read() -> object:
        if not served:
            return sqlite_registry.model_folder(URI, project)
        target = work / f"fetch-{next(counter)}"
        found = rest_registry.fetch_model(URI, target, project)
        shutil.rmtree(target, ignore_errors=True)
        assert found is not None, "the REST read fell back to MLflow's client"
        return found

    def mlflow_read() -> object:
        target = work / f"mlflow-{next(counter)}"
        found = download_artifacts(artifact_uri=URI, dst_path=str(target))
        shutil.rmtree(target, ignore_errors=True)
        return found

    return {
        "alias lookup (MLflow client)": _median(
            lambda: client.get_model_version_by_alias("coconet", "champion"), runs
        ),
        "coconet fuse's model read": _median(fuse_read, runs),
        "MLflow download_artifacts": _median(mlflow_read, runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    base = Path(tempfile.mkdtemp(prefix="bench-team-"))
    base.chmod(0o755)  # the postgres user must reach the services folder
    services = base / "services"
    ports = {f"COCONET_{k}_PORT": str(_free_port()) for k in ("PG", "MLFLOW", "PREFECT")}
    script = ROOT / "scripts" / "team_services.sh"
    env = {**os.environ, **ports}
    try:
        subprocess.run([str(script), "start", str(services)], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        server = f"http://127.0.0.1:{ports['COCONET_MLFLOW_PORT']}"
        project = base / "project"
        project.mkdir()
        results = {}
        for name, uri, artifacts in (
            ("SQLite", f"sqlite:///{project / 'mlflow.db'}", (project / "mlartifacts").as_uri()),
            ("server", server, None),
        ):
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            if name == "server":
                os.environ["MLFLOW_TRACKING_URI"] = server
            _register(uri, artifacts)
            results[name] = _reads(project, args.runs, base)
    finally:
        subprocess.run([str(script), "stop", str(services)], env=env, check=False)
        shutil.rmtree(base, ignore_errors=True)
    print(f"registry reads of {URI}, median of {args.runs} (load {os.getloadavg()[0]:.2f})")
    print(f"{'read':<32} {'SQLite':>9} {'server':>9} {'ratio':>7}")
    for what, local in results["SQLite"].items():
        remote = results["server"][what]
        print(f"{what:<32} {local * 1000:>7.1f}ms {remote * 1000:>7.1f}ms {remote / local:>6.1f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
