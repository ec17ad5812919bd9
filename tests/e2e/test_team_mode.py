"""Team mode end to end (slow): the README's quick run on a "workstation" clone against the team
services (MLflow server on PostgreSQL with proxied artifacts, Prefect server on PostgreSQL), a
local-folder DVC remote and a bare git origin; a "worker" clone that pulls, finds nothing to
reproduce, fuses and serves the champion from the server, survives a PostgreSQL restart, and
retrains on its own inbox with ``--publish``; the workstation pulls that branch back.

The timings it measures (pull, registry reads) are written to ``team_timings.json`` in the
test's folder and printed (README "Team mode" quotes them); nothing asserts on them."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.test_quick_run import readme_quick_command
from tests.helpers.dvc_project import write_pair
from tests.helpers.mirror import mirror_dir
from tests.helpers.serving import served_champion
from tests.helpers.team_services import team_services
from tests.helpers.tiny_project import coconet, project_env, project_files

pytestmark = pytest.mark.slow
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]


def _run(command, cwd, env, timeout=2400):
    tic = time.monotonic()
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout, time.monotonic() - tic


def _png_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray((array * 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _serve_one_request(worker: Path, env: dict[str, str], tmp_path: Path) -> None:
    """`mlflow models serve` of the champion from the server registry answers a fusion."""
    with served_champion(env, tmp_path / "serve.log", cwd=worker) as (base, _):
        rng = np.random.default_rng(0)
        records = [{"vis": _png_b64(rng.random((16, 24))), "ir": _png_b64(rng.random((16, 24)))}]
        request = urllib.request.Request(
            f"{base}/invocations",
            json.dumps({"dataframe_records": records}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            assert answer.status == 200
            assert json.loads(answer.read())["predictions"][0]["fused"]


@pytest.fixture(scope="module")
def services():
    if mirror_dir() is None:
        pytest.skip("public data mirror not found (../shared/mirror or COCONET_MIRROR)")
    with team_services() as found:
        yield found


def _env(root: Path, cache: Path, services: dict) -> dict[str, str]:
    return project_env(root, cache) | {
        "MLFLOW_TRACKING_URI": services["mlflow"],
        "PREFECT_API_URL": services["prefect"],
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def _pg_restart(services: dict) -> None:
    pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    folder = services["dir"]
    command = [str(pg_bin / "pg_ctl"), "-D", f"{folder}/pg", "-l", f"{folder}/logs/postgres.log"]
    command += ["-w", "restart"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    # no pipes: the restarted server would hold them open
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)  # fmt: skip


def test_workstation_and_worker_share_registry_data_and_retrains(services, tmp_path):
    timings: dict[str, float] = {}
    cache = tmp_path / "cache"
    ws = tmp_path / "workstation"
    for rel in project_files():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(__file__).resolve().parents[2] / rel, ws / rel)
    (ws / "dvc.lock").unlink(missing_ok=True)
    env = _env(ws, cache, services)
    _run(["git", "init", "-q", "-b", "main"], ws, env)
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")],
         ws, env)  # fmt: skip
    _run(["git", "add", "-A"], ws, env)
    _run([*GIT, "commit", "-qm", "clean clone"], ws, env)

    _, timings["workstation quick run s"] = _run(readme_quick_command(), ws, env)
    record = json.loads((ws / "artifacts/registered.json").read_text())
    assert record["tracking_uri"] == services["mlflow"] and record["alias"] == "champion"
    _run(["git", "add", "-A"], ws, env)
    _run([*GIT, "commit", "-qm", "quick run"], ws, env)
    _, timings["dvc push s"] = _run([sys.executable, "-m", "dvc", "push"], ws, env)
    origin = tmp_path / "origin.git"
    _run(["git", "clone", "-q", "--bare", str(ws), str(origin)], tmp_path, env)
    _run(["git", "remote", "add", "origin", str(origin)], ws, env)
    _run(["git", "fetch", "-q", "origin"], ws, env)

    worker = tmp_path / "worker"
    _run(["git", "clone", "-q", str(origin), str(worker)], tmp_path, env)
    wenv = _env(worker, tmp_path / "worker-cache", services)
    _, timings["dvc pull s"] = _run([sys.executable, "-m", "dvc", "pull"], worker, wenv)
    status, _ = _run([sys.executable, "-m", "dvc", "status"], worker, wenv)
    assert "up to date" in status, status  # registered.json and the reports travelled

    pair = sorted((worker / "data/raw/tno40/ir").glob("*.png"))[0].name
    fuse = [*coconet(worker), "fuse", "--model", "models:/coconet@champion",
            "--ir", f"data/raw/tno40/ir/{pair}", "--vis", f"data/raw/tno40/vis/{pair}"]  # fmt: skip
    _, timings["fuse from server registry s"] = _run([*fuse, "-o", str(tmp_path / "a.png")],
                                                     worker, wenv)  # fmt: skip
    assert not (ws / "mlflow.db").exists()  # the workstation never wrote an embedded store
    out, _ = _run([*coconet(worker), "lineage", "--verify", "--json"], worker, wenv)
    lineage = json.loads(out)
    assert lineage["model"]["aliases"] == ["champion"]
    assert all(item["ok"] for item in lineage["verify"])

    _serve_one_request(worker, wenv, tmp_path)

    _pg_restart(services)  # between two commands: the server reconnects
    _run([*fuse, "-o", str(tmp_path / "b.png")], worker, wenv)

    inbox = worker / "inbox"
    write_pair(inbox / "field1", size=(160, 224))
    out, timings["worker retrain s"] = _run(
        [*coconet(worker), "retrain", "--publish", "retrain"], worker, wenv
    )
    assert "retrain: retrained" in out and "published" in out, out
    assert not (inbox / "field1").exists()

    _run(["git", "fetch", "-q", "origin"], ws, env)
    _run(["git", "merge", "-q", "--ff-only", "origin/retrain"], ws, env)
    _run([sys.executable, "-m", "dvc", "pull"], ws, env)
    status, _ = _run([sys.executable, "-m", "dvc", "status"], ws, env)
    assert "up to date" in status, status
    back = json.loads((ws / "artifacts/registered.json").read_text())
    assert int(back["version"]) == int(record["version"]) + 1
    assert (ws / "incoming/field1/ir.png").is_file()
    (tmp_path / "team_timings.json").write_text(json.dumps(timings, indent=2))
    print("team timings:", json.dumps(timings))
