"""The light read over a tracking server's REST API (pipeline.tracking.rest_registry): the model
MLflow's client would download, without importing MLflow; MLflow's client where it cannot be
sure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import mlflow.tracking._model_registry.utils as registry_utils
import mlflow.tracking._tracking_service.utils as tracking_utils
import numpy as np
import pytest

from pipeline.core.params import PROJECT_ROOT
from pipeline.fusion import fuse_arrays
from pipeline.tracking import names, pyfunc_model
from pipeline.tracking.model_folder import load_model_dir
from pipeline.tracking.rest_registry import fetch_model
from pipeline.tracking.run_owner import owner_tags
from tests.helpers.models import CPU_FP32

GLOBAL_URIS = ((tracking_utils, "_tracking_uri"), (registry_utils, "_registry_uri"))

pytestmark = pytest.mark.slow  # starts an MLflow server (tens of seconds on 2 cores)


@pytest.fixture(scope="module")
def server(random_model, tmp_path_factory):
    """A tracking server proxying its artifacts, holding ``random_model`` as coconet@champion."""
    work = tmp_path_factory.mktemp("server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli = Path(sys.executable).parent / "mlflow"
    command = [str(cli), "server", "--backend-store-uri", f"sqlite:///{work / 'db.sqlite'}"]
    command += ["--artifacts-destination", str(work / "art"), "-h", "127.0.0.1", "-p", str(port)]
    path = os.pathsep.join([str(cli.parent), os.environ.get("PATH", "")])
    log = open(work / "log.txt", "w")  # noqa: SIM115  (open while the server runs)
    env = {**os.environ, "PATH": path}
    process = subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None and time.monotonic() < deadline, work / "log.txt"
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(1)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", uri)
            patch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # set_registry_uri exports it
            for module, uri_name in GLOBAL_URIS:  # an earlier test's store is not ours
                patch.setattr(module, uri_name, None)
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            experiment = mlflow.create_experiment("e")
            with mlflow.start_run(experiment_id=experiment) as run:
                pyfunc_model.log_model(random_model, {"vgg_weights": "random"})
            version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "coconet")
            mlflow.MlflowClient().set_registered_model_alias("coconet", "champion", "1")
        yield {"uri": uri, "experiment": experiment, "version": version.version}
    finally:  # the server, its workers and job consumers: one process group, ours
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        log.close()


@pytest.fixture
def project(tmp_path, server, monkeypatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    for setting in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME"):
        monkeypatch.delenv(setting, raising=False)
    return tmp_path


def test_the_model_comes_over_rest_as_mlflow_would_give_it(project, server, random_model, tmp_path):
    client = mlflow.MlflowClient(server["uri"], registry_uri=server["uri"])
    download_uri = client.get_model_version_download_uri("coconet", server["version"])
    expected = Path(mlflow.artifacts.download_artifacts(download_uri, tracking_uri=server["uri"]))
    for uri in ("models:/coconet@champion", "models:/coconet/1"):
        folder = fetch_model(uri, tmp_path / uri[-2:].strip("@/"), project)
        assert folder is not None
        for name in ("MLmodel", "data/coconet/config.json", "data/coconet/model.safetensors"):
            assert (folder / name).read_bytes() == (expected / name).read_bytes(), name
    vis = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)
    ir = vis[::-1].copy()
    fused = fuse_arrays(load_model_dir(folder), vis, ir, CPU_FP32)
    reference = fuse_arrays(random_model.eval(), vis, ir, CPU_FP32)
    np.testing.assert_allclose(fused, reference, atol=1e-6)


def test_fusing_from_a_server_imports_no_mlflow(project, server):
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from pipeline.inference import load_fusion_model\n"
        "from tests.helpers.models import CPU_FP32\n"
        f"load_fusion_model('models:/coconet@champion', CPU_FP32, Path({str(project)!r}))\n"
        "print(json.dumps('mlflow' in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, check=True)  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1]) is False


def test_what_only_mlflows_client_can_answer_goes_through_it(
    project, server, tmp_path, monkeypatch
):
    assert fetch_model("models:/coconet@nothing", tmp_path / "a", project) is None
    assert fetch_model("runs:/abc/model", tmp_path / "b", project) is None
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret")  # credentials: MLflow sends them
    assert fetch_model("models:/coconet@champion", tmp_path / "c", project) is None
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    client = mlflow.MlflowClient(server["uri"])
    stale = client.create_run(server["experiment"],
                              tags={**owner_tags(project), names.OWNER_PID: dead})  # fmt: skip
    assert fetch_model("models:/coconet@champion", tmp_path / "d", project) is None
    from pipeline.inference import load_fusion_model

    load_fusion_model("models:/coconet@champion", CPU_FP32, project)  # MLflow's path marks it
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert fetch_model("models:/coconet@champion", tmp_path / "e", project) is not None
