"""The registered CoCoNet as an MLflow pyfunc model: safetensors weights + a JSON config, loaded
by this module (the flavor's ``loader_module``), never by unpickling or by code from the store.

Model folder (``runs:/<run>/model``)::

    MLmodel                      python_function: loader_module pipeline.tracking.pyfunc_model
    data/coconet/config.json     format, version, vgg_weights, precision, params_digest, tensors
    data/coconet/model.safetensors   the fusion state dict (the VGG-19 layers fusion runs, not
                                 conv4_1 .. conv5_4, which only the training loss uses)

Loading reads only those two files: anything else in place of the weights (a pickle, a torch
``.pth``) is a :class:`ModelFormatError`, never executed.

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
import yaml
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from models.coconet import CoCoNet
from models.state import StateDictError, coconet_from_state, fusion_state
from pipeline.core.errors import CoconetError
from pipeline.core.placement import place
from pipeline.tracking.served_model import SIGNATURE, FusionModel, input_example

FORMAT, FORMAT_VERSION = "coconet-safetensors", 1
DATA_DIR, CONFIG_FILE, WEIGHTS_FILE = "coconet", "config.json", "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
PACKAGE = "coconet"
REQUIRED = ("torch", "torchvision", "numpy", "safetensors", "pandas", "pillow", "kornia")
REQUIRED += ("tifffile", "psutil", "pyyaml", "mlflow")


class ModelFormatError(CoconetError, ValueError):
    """A model folder is not a CoCoNet pyfunc model in this format."""


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
            loader_module=__name__,
            data_path=str(data),
            pip_requirements=pip_requirements(),
            signature=SIGNATURE,
            input_example=input_example(),
        )


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing (not a CoCoNet pyfunc model folder)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFormatError(f"{path}: too large for a model config")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: not a {FORMAT} config")
    if config.get("version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: format version {config.get('version')!r}, this code reads {FORMAT_VERSION}"
        )
    if not isinstance(config.get("vgg_weights"), str):
        raise ModelFormatError(f"{path}: no vgg_weights entry")
    return config


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; anything else is refused before it is parsed."""
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing (not a CoCoNet pyfunc model folder)")
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    if not (2 <= header <= len(data) - 8 and data[8:9] == b"{"):
        raise ModelFormatError(
            f"{path}: not a safetensors file (refused; weights are never unpickled)"
        )
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_weights(folder: str | Path) -> CoCoNet:
    """A CoCoNet in eval mode from ``config.json`` and ``model.safetensors`` in ``folder``."""
    folder = Path(folder)
    config = _read_config(folder / CONFIG_FILE)
    state = _read_weights(folder / WEIGHTS_FILE)
    try:
        return coconet_from_state(state, config["vgg_weights"], str(folder / WEIGHTS_FILE))
    except StateDictError as exc:
        raise ModelFormatError(str(exc)) from exc


def load_model_dir(path: str | Path) -> CoCoNet:
    """A CoCoNet from a downloaded model folder whose ``MLmodel`` names this loader module."""
    path = Path(path)
    mlmodel = path / "MLmodel"
    try:
        spec = yaml.safe_load(mlmodel.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelFormatError(f"{mlmodel}: not a readable MLmodel file ({exc})") from exc
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    flavor = flavors.get("python_function") if isinstance(flavors, dict) else None
    flavor = flavor if isinstance(flavor, dict) else {}
    loader = flavor.get("loader_module")
    if loader != __name__:
        raise ModelFormatError(
            f"{mlmodel}: loader module {loader!r}, not {__name__} (a model logged in another "
            "format, possibly pickled, is refused; retrain it with this version)"
        )
    data = (path / str(flavor.get("data", ""))).resolve()
    if flavor.get("code") or not data.is_relative_to(path.resolve()):
        raise ModelFormatError(f"{mlmodel}: code paths or data outside the model folder")
    return load_weights(data)


def _load_pyfunc(data_path: str) -> FusionModel:
    """MLflow's entry point (``mlflow.pyfunc.load_model``, ``mlflow models serve``): placed
    where ``coconet fuse`` places by default (CUDA when present, auto precision, a share of
    the memory free at each request)."""
    placement = place()
    model = load_weights(data_path)
    model = model.to(device=placement.device, memory_format=torch.channels_last)
    return FusionModel(model, placement)
