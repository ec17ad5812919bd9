"""The registered CoCoNet as an MLflow pyfunc model: safetensors weights + a JSON config, loaded
by this module (the flavor's ``loader_module``), never by unpickling or by code from the store.

Model folder (``runs:/<run>/model``)::

    MLmodel                      python_function: loader_module pipeline.tracking.pyfunc_model
    data/coconet/config.json     format, version, vgg_weights, precision, params_digest, tensors
    data/coconet/model.safetensors   the fusion state dict (the VGG-19 layers fusion runs, not
                                 conv4_1 .. conv5_4, which only the training loss uses)

Loading (:mod:`pipeline.tracking.model_folder`, which imports no MLflow) reads only those two
files: anything else in place of the weights (a pickle, a torch ``.pth``) is a
:class:`ModelFormatError`, never executed.

The model carries a signature (string columns ``vis`` and ``ir`` in, ``fused`` out) and an
input example; its requirements name this package (``coconet``) and the libraries it needs, and
no lock file is copied into it. Requests are handled by :mod:`pipeline.tracking.served_model`:
REST (``mlflow models serve -m models:/coconet@champion --env-manager local``), ``POST
/invocations`` with ``{"dataframe_records": [{"vis": "<base64 PNG>", "ir": "<base64 PNG>"}]}``
-> ``{"predictions": [{"fused": "<base64 8-bit PNG>"}]}``, fused as ``coconet fuse`` fuses.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import torch
from safetensors.torch import save_file

from models.state import fusion_state
from pipeline.core.heap import keep_freed_memory
from pipeline.core.placement import place
from pipeline.tracking.model_folder import (  # noqa: F401  (load_model_dir, ModelFormatError: API)
    CONFIG_FILE,
    DATA_DIR,
    FORMAT,
    FORMAT_VERSION,
    LOADER_MODULE,
    WEIGHTS_FILE,
    ModelFormatError,
    load_model_dir,
    load_weights,
)
from pipeline.tracking.served_model import SIGNATURE, FusionModel, input_example

PACKAGE = "coconet"
REQUIRED = ("torch", "torchvision", "numpy", "safetensors", "pandas", "pillow", "kornia")
REQUIRED += ("tifffile", "psutil", "pyyaml", "mlflow")


def write_model_data(model: torch.nn.Module, folder: Path, config: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (format, tensors, dtype added) to
    ``folder``, which is returned."""
    state = {k: v.detach().cpu().contiguous() for k, v in fusion_state(model.state_dict()).items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    body = {"format": FORMAT, "version": FORMAT_VERSION, "architecture": "CoCoNet"}
    body.update({"precision": "/".join(dtypes), "tensors": len(state), **config})
    (folder / CONFIG_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return folder


def pip_requirements() -> list[str]:
    """This package and what its loader imports, pinned to the versions installed here."""
    pins = [f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}"]
    for name in REQUIRED:
        pins.append(f"{name}=={importlib.metadata.version(name).split('+')[0]}")
    return pins


@contextmanager
def _no_lock_file():
    """MLflow copies ``uv.lock`` and ``pyproject.toml`` of the working directory into a model
    (and exports every locked package as a requirement) unless told not to."""
    before = os.environ.get("MLFLOW_UV_AUTO_DETECT")
    os.environ["MLFLOW_UV_AUTO_DETECT"] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_UV_AUTO_DETECT", None)
        else:
            os.environ["MLFLOW_UV_AUTO_DETECT"] = before


def log_model(model: torch.nn.Module, config: dict[str, Any], name: str = "model") -> Any:
    """Log ``model`` to the active MLflow run as this pyfunc model, with its signature, input
    example and requirements; returns MLflow's ModelInfo. ``config`` (``vgg_weights``,
    ``params_digest``, ...) goes into ``config.json``."""
    with tempfile.TemporaryDirectory() as tmp, _no_lock_file():
        data = write_model_data(model, Path(tmp) / DATA_DIR, config)
        return mlflow.pyfunc.log_model(
            name=name,
            loader_module=LOADER_MODULE,
            data_path=str(data),
            pip_requirements=pip_requirements(),
            signature=SIGNATURE,
            input_example=input_example(),
        )


def _load_pyfunc(data_path: str) -> FusionModel:
    """MLflow's entry point (``mlflow.pyfunc.load_model``, ``mlflow models serve``): placed
    where ``coconet fuse`` places by default (CUDA when present, auto precision, a share of
    the memory free at each request)."""
    placement = place()
    keep_freed_memory()
    model = load_weights(data_path)
    model = model.to(device=placement.device, memory_format=torch.channels_last)
    return FusionModel(model, placement)
