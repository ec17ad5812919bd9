"""Reading a CoCoNet pyfunc model folder (``MLmodel``, ``config.json``, ``model.safetensors``)
without importing MLflow: nothing is unpickled and no code from the store runs. Anything else in
place of the weights (a pickle, a torch ``.pth``) is a :class:`ModelFormatError`, never executed.
:mod:`pipeline.tracking.pyfunc_model` writes the folders and is the loader module they name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load

from models.coconet import CoCoNet
from models.state import StateDictError, coconet_from_state
from pipeline.core.errors import CoconetError

FORMAT, FORMAT_VERSION = "coconet-safetensors", 1
DATA_DIR, CONFIG_FILE, WEIGHTS_FILE = "coconet", "config.json", "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
LOADER_MODULE = "pipeline.tracking.pyfunc_model"  # what a folder's MLmodel must name


class ModelFormatError(CoconetError, ValueError):
    """A model folder is not a CoCoNet pyfunc model in this format."""


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
        return coconet_from_state(
            state,
            config["vgg_weights"],
            str(folder / WEIGHTS_FILE),
            config.get("output_contrast"),
        )
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
    if loader != LOADER_MODULE:
        raise ModelFormatError(
            f"{mlmodel}: loader module {loader!r}, not {LOADER_MODULE} (a model logged in another "
            "format, possibly pickled, is refused; retrain it with this version)"
        )
    data = (path / str(flavor.get("data", ""))).resolve()
    if flavor.get("code") or not data.is_relative_to(path.resolve()):
        raise ModelFormatError(f"{mlmodel}: code paths or data outside the model folder")
    return load_weights(data)
