"""The registered model: safetensors + JSON loaded by our own loader module, never unpickled
(a planted pickle payload never runs), fusing through the pyfunc API and over REST."""

from __future__ import annotations

import base64
import copy
import io
import logging
import os
import pickle
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from models.state import fusion_state, is_contrast_only
from pipeline.cli import app
from pipeline.core.heap import _glibc
from pipeline.core.imageio import write_image
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import place
from pipeline.fusion import fuse_arrays
from pipeline.inference import ModelLoadError, load_fusion_model
from pipeline.stages import register as reg
from pipeline.tracking import pyfunc_model, served_model
from pipeline.tracking.served_model import RequestError
from tests.helpers.hostile import png_header_only
from tests.helpers.models import CPU_FP32
from tests.helpers.registry import log_training_run, make_project
from tests.helpers.serving import served_champion

PARAMS = Params.model_validate({"model": {"vgg_weights": "random"}})
METRICS = {"VIF": 0.5, "Qabf": 0.5, "SSIM": 0.5, "Nabf": 0.1}


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture(scope="module")
def registered(random_model, mlflow_store, tmp_path_factory):
    """``random_model`` trained-and-registered as ``models:/coconet@champion``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
        root = make_project(tmp_path_factory.mktemp("proj"), METRICS)
        record = log_training_run(root, mlflow_store, model=random_model)
        reg.run(PARAMS, ProjectPaths(root))
    return record


@pytest.fixture
def store(registered, mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    return registered


def model_folder(model_uri: str) -> Path:
    """The logged model's folder (``models:/m-<id>``) in the local artifact store."""
    from mlflow import MlflowClient
    from mlflow.utils.file_utils import local_file_uri_to_path

    logged = MlflowClient().get_logged_model(model_uri.removeprefix("models:/"))
    return Path(local_file_uri_to_path(logged.artifact_location))


def test_loads_through_alias_and_run_uri_without_pickle(store, random_model):
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts("models:/coconet@champion"))
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"data/coconet/model.safetensors", "data/coconet/config.json"} <= names
    assert not [n for n in names if n.endswith((".pth", ".pkl", ".pt"))], names
    stored = load_file(folder / "data/coconet/model.safetensors")  # lean: what fusion runs
    assert set(stored) == set(fusion_state(random_model.state_dict()))
    assert not any(is_contrast_only(key) for key in stored)
    expected = random_model.state_dict()
    for uri in ("models:/coconet@champion", store["run_model_uri"]):
        model = load_fusion_model(uri, CPU_FP32)
        assert not model.training and model.vgg_weights == "random"
        state = model.state_dict()
        assert set(state) == set(stored)
        assert all(torch.equal(v, expected[k]) for k, v in state.items())


def test_planted_pickle_is_refused_and_never_runs(store, tmp_path):
    weights = model_folder(store["model_uri"]) / "data/coconet/model.safetensors"
    original = weights.read_bytes()
    marker = tmp_path / "pwned"
    weights.write_bytes(pickle.dumps(Payload(marker)))
    try:
        with pytest.raises(ModelLoadError, match="not a safetensors file"):
            load_fusion_model("models:/coconet@champion", CPU_FP32)
        write_image(tmp_path / "ir.png", np.full((16, 16), 0.5, np.float32))
        write_image(tmp_path / "vis.png", np.full((16, 16), 0.25, np.float32))
        args = ["fuse", "--model", "models:/coconet@champion", "--device", "cpu"]
        args += ["--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png")]
        result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out.png")])
        assert result.exit_code == 1, result.output
        assert "data/coconet/model.safetensors: not a safetensors file" in result.output
        assert not (tmp_path / "out.png").exists()
    finally:
        weights.write_bytes(original)
    assert not marker.exists(), "the planted pickle ran"


def test_a_pickled_model_version_is_refused_and_never_runs(store, tmp_path):
    """A version logged the old way (mlflow.pytorch, pickle) whose model.pth is a payload."""
    import mlflow

    marker = tmp_path / "pwned"
    with mlflow.start_run(experiment_id=store["experiment_id"]):
        info = mlflow.pytorch.log_model(
            torch.nn.Linear(2, 1),
            name="model",
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    (model_folder(info.model_uri) / "data/model.pth").write_bytes(pickle.dumps(Payload(marker)))
    version = mlflow.register_model(info.model_uri, "coconet").version
    mlflow.MlflowClient().set_registered_model_alias("coconet", "pickled", version)
    with pytest.raises(ModelLoadError, match="loader module 'mlflow.pytorch'"):
        load_fusion_model("models:/coconet@pickled", CPU_FP32)
    assert not marker.exists(), "the pickled model ran"


def test_model_folder_refusals(tmp_path):
    folder = pyfunc_model.write_model_data(torch.nn.Linear(2, 1), tmp_path / "m", {})
    with pytest.raises(pyfunc_model.ModelFormatError, match="config.json: no vgg_weights"):
        pyfunc_model.load_weights(folder)
    folder = pyfunc_model.write_model_data(
        torch.nn.Linear(2, 1), tmp_path / "m", {"vgg_weights": "random"}
    )
    with pytest.raises(pyfunc_model.ModelFormatError, match="weights do not fit CoCoNet"):
        pyfunc_model.load_weights(folder)
    nan = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(nan.bias, float("nan"))
    pyfunc_model.write_model_data(nan, folder, {"vgg_weights": "random"})
    with pytest.raises(pyfunc_model.ModelFormatError, match="non-finite weights .* in bias"):
        pyfunc_model.load_weights(folder)
    (folder / "model.safetensors").write_bytes(pickle.dumps(Payload(tmp_path / "pwned")))
    with pytest.raises(pyfunc_model.ModelFormatError, match="not a safetensors file"):
        pyfunc_model.load_weights(folder)
    (folder / "config.json").write_text('{"format": "coconet-safetensors", "version": 2}')
    with pytest.raises(pyfunc_model.ModelFormatError, match="format version 2"):
        pyfunc_model.load_weights(folder)
    assert not (tmp_path / "pwned").exists()


def test_the_output_contrast_travels_in_the_model_config(tmp_path, random_model):
    from models.contrast import OutputContrast

    config = {"vgg_weights": "random", "output_contrast": {"mean": 0.4, "sd": 0.2}}
    folder = pyfunc_model.write_model_data(random_model, tmp_path / "m", config)
    assert pyfunc_model.load_weights(folder).output_contrast == OutputContrast(0.4, 0.2)
    config["output_contrast"] = None  # and a model without one (every model before it) has none
    assert (
        pyfunc_model.load_weights(
            pyfunc_model.write_model_data(random_model, tmp_path / "m", config)
        ).output_contrast
        is None
    )
    config["output_contrast"] = {"mean": 0.4, "sd": -1}
    pyfunc_model.write_model_data(random_model, tmp_path / "m", config)
    with pytest.raises(pyfunc_model.ModelFormatError, match="model.safetensors: output_contrast"):
        pyfunc_model.load_weights(folder)


def _png_b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_pyfunc_predict_request_forms(store, random_model):
    import mlflow
    import pandas as pd

    rng = np.random.default_rng(0)
    vis, ir = rng.random((20, 28)).astype(np.float32), rng.random((20, 28)).astype(np.float32)
    served = mlflow.pyfunc.load_model("models:/coconet@champion")
    # fused as `coconet fuse` fuses: precision auto, the default memory budget
    settings = place("cpu", "auto")
    reference = copy.deepcopy(random_model).to(memory_format=torch.channels_last)  # as served
    expected = fuse_arrays(reference, vis, ir, settings)

    lists = served.predict(pd.DataFrame([{"vis": vis.tolist(), "ir": ir.tolist()}] * 2))
    assert list(lists.columns) == ["fused"] and len(lists) == 2
    np.testing.assert_allclose(np.asarray(lists["fused"][1]), expected, atol=1e-5)

    colour = np.stack([vis, ir, vis], axis=-1)
    pngs = served.predict(pd.DataFrame([{"vis": _png_b64(colour), "ir": _png_b64(ir)}]))
    fused = np.asarray(Image.open(io.BytesIO(base64.b64decode(pngs["fused"][0]))))
    assert fused.shape == (20, 28, 3) and fused.dtype == np.uint8

    with pytest.raises(RequestError, match="request lacks ir"):
        served.predict(pd.DataFrame([{"vis": vis.tolist()}]))
    with pytest.raises(RequestError, match="within 0..1"):
        served.predict(pd.DataFrame([{"vis": (vis * 3).tolist(), "ir": ir.tolist()}]))
    with pytest.raises(mlflow.exceptions.MlflowException, match="types for column ir"):
        served.predict(pd.DataFrame([{"vis": _png_b64(vis), "ir": 7}]))  # the signature's check


def test_the_logged_model_is_well_formed(store):
    """A signature and an input example MLflow validates requests with; requirements that name
    this package; no lock file copied in."""
    import mlflow

    info = mlflow.models.get_model_info("models:/coconet@champion")
    assert [c.name for c in info.signature.inputs.inputs] == ["vis", "ir"]
    assert [c.name for c in info.signature.outputs.inputs] == ["fused"]
    folder = Path(mlflow.artifacts.download_artifacts("models:/coconet@champion"))
    assert (folder / "serving_input_example.json").is_file()
    requirements = (folder / "requirements.txt").read_text().split()
    assert requirements[0].startswith("coconet==") and any(
        r.startswith("torch==") for r in requirements
    )
    assert not (folder / "uv.lock").exists() and not (folder / "pyproject.toml").exists()


def _tiff_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _float_tiff(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


@pytest.mark.slow
def test_mlflow_models_predict_with_the_local_env_manager(store, mlflow_store, tmp_path):
    """The README's `mlflow models predict` line, as a user runs it."""
    import json

    rng = np.random.default_rng(2)
    vis, ir = rng.random((16, 24)), rng.random((16, 24))
    request = tmp_path / "input.json"
    request.write_text(
        json.dumps({"dataframe_records": [{"vis": _png_b64(vis), "ir": _png_b64(ir)}]})
    )
    cli = Path(sys.executable).parent / "mlflow"
    command = [str(cli), "models", "predict", "-m", "models:/coconet@champion"]
    command += ["-i", str(request), "-t", "json", "--env-manager", "local"]
    command += ["-o", str(tmp_path / "out.json")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fused = json.loads((tmp_path / "out.json").read_text())["predictions"][0]["fused"]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(fused))))
    assert image.shape == (16, 24) and image.dtype == np.uint8


def _post(url: str, body: bytes, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_fusing_on_a_worker_thread_tells_how_to_start_a_fast_server(
    tmp_path, random_model, monkeypatch, caplog
):
    """MLflow's server fuses on worker threads: the first such request warns (glibc, without
    MALLOC_ARENA_MAX=1), once; loading and fusing on the main thread (a script, MLflow checking
    the input example while a training run logs the model) do not."""
    config = {"vgg_weights": "random"}
    folder = pyfunc_model.write_model_data(random_model, tmp_path / "m", config)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    pair = {"vis": np.full((16, 16), 0.5).tolist(), "ir": np.full((16, 16), 0.25).tolist()}
    hint = "start the server with MALLOC_ARENA_MAX=1"
    with caplog.at_level(logging.WARNING, logger=served_model.__name__):
        served = pyfunc_model._load_pyfunc(str(folder))
        served.predict(pair)
        assert hint not in caplog.text
        for _ in range(2):
            worker = threading.Thread(target=served.predict, args=(pair,))
            worker.start()
            worker.join()
    assert caplog.text.count(hint) == (1 if _glibc() else 0)


@pytest.mark.slow
def test_mlflow_models_serve_fuses_over_rest(store, mlflow_store, tmp_path):
    import json

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store}
    with served_champion(env, tmp_path / "serve.log", timeout=180) as (base, server):
        rng = np.random.default_rng(1)
        vis, ir = rng.random((24, 32)), rng.random((24, 32))
        url = f"{base}/invocations"
        records = [{"vis": vis.tolist(), "ir": ir.tolist()}]
        body = json.dumps({"dataframe_records": records}).encode()
        status, answer = _post(url, body)
        assert status == 200, answer[:2000]
        fused = np.asarray(json.loads(answer)["predictions"][0]["fused"])
        assert fused.shape == (24, 32) and fused.min() >= 0 and fused.max() <= 1
        assert fused.std() > 0
        good = [{"vis": _png_b64(vis), "ir": _png_b64(ir)}]
        status, answer = _post(url, json.dumps({"dataframe_records": good}).encode())
        assert status == 200 and json.loads(answer)["predictions"][0]["fused"], answer[:500]
        nan = np.full((20, 20), np.nan, np.float32)
        bad_requests = {
            "missing column": ([{"vis": _png_b64(vis)}], "request lacks ir (give vis and ir)"),
            "wrong type": ([{"vis": _png_b64(vis), "ir": 3}], "ir: expected base64 image bytes"),
            "undecodable": ([{"vis": "bm90IGFuIGltYWdl", "ir": _png_b64(ir)}], "vis: not a "
                            "readable image"),
            "bomb": ([{"vis": _tiff_b64(png_header_only(30000, 30000)), "ir": _png_b64(ir)}],
                     "vis: 30000x30000 is 900.0 MP, over the limit of 100.0 MP"),
            "non-finite": ([{"vis": _tiff_b64(_float_tiff(nan)), "ir": _png_b64(ir)}],
                           "vis: 400 pixel(s) are NaN or infinite"),
        }  # fmt: skip
        for case, (rows, reason) in bad_requests.items():
            tic = time.monotonic()
            status, answer = _post(url, json.dumps({"dataframe_records": rows}).encode())
            body = json.loads(answer)
            assert status == 400, (case, answer[:2000])
            assert body["message"].startswith(reason), (case, body)
            assert "\n" not in body["message"] and "stack_trace" not in body, (case, body)
            assert str(tmp_path) not in body["message"] and "/tmp" not in body["message"]
            assert time.monotonic() - tic < 5, case
        status, _ = _post(url, json.dumps({"dataframe_records": good}).encode())
        assert status == 200 and server.poll() is None  # still serving
    assert "MALLOC_ARENA_MAX is not 1" not in (tmp_path / "serve.log").read_text()  # README way
