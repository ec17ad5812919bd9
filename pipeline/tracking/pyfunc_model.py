"""The registered CoCoNet as an MLflow pyfunc model: safetensors weights + a JSON config, loaded
by this module (the flavor's ``loader_module``), never by unpickling or by code from the store.

Model folder (``runs:/<run>/model``)::

    MLmodel                      python_function: loader_module pipeline.tracking.pyfunc_model
    data/coconet/config.json     format, version, vgg_weights, precision, params_digest, tensors
    data/coconet/model.safetensors   the full state dict (VGG tensors included)

Loading reads only those two files: anything else in place of the weights (a pickle, a torch
``.pth``) is a :class:`ModelFormatError`, never executed.

REST (``mlflow models serve -m models:/coconet@champion --env-manager local``), ``POST
/invocations`` with ``Content-Type: application/json``, one record per pair::

    {"dataframe_records": [{"vis": "<base64 PNG>", "ir": "<base64 PNG>"}]}
    -> {"predictions": [{"fused": "<base64 8-bit PNG>"}]}

Images are base64 file bytes (PNG, BMP, JPEG or TIFF; 8 or 16 bit; a colour visible image gives
a colour result, fused in YCbCr) or nested lists of floats on 0..1 (HxW grey or HxWx3 RGB), in
which case ``fused`` is a nested list of floats on 0..1 too. ``{"inputs": {"vis": ..., "ir":
...}}`` fuses one pair the same way. Both images of a pair must have the same size. Requests
are fused as ``coconet fuse`` fuses (:func:`pipeline.fusion.fuse_arrays`): precision ``auto``
and, for a pair too large for half the free memory, exact tiles.
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from models.coconet import CoCoNet
from models.state import StateDictError, coconet_from_state
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import ImageError, read_image, write_image
from pipeline.core.placement import Placement, place
from pipeline.fusion import fuse_arrays

FORMAT, FORMAT_VERSION = "coconet-safetensors", 1
DATA_DIR, CONFIG_FILE, WEIGHTS_FILE = "coconet", "config.json", "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
IMAGE_MAGIC = {
    b"\x89PNG": ".png",
    b"BM": ".bmp",
    b"\xff\xd8": ".jpg",
    b"II*\x00": ".tif",
    b"MM\x00*": ".tif",
}


class ModelFormatError(CoconetError, ValueError):
    """A model folder is not a CoCoNet pyfunc model in this format."""


def write_model_data(model: torch.nn.Module, folder: Path, config: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (format, tensors, dtype added) to
    ``folder``, which is returned."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    body = {"format": FORMAT, "version": FORMAT_VERSION, "architecture": "CoCoNet"}
    body.update({"precision": "/".join(dtypes), "tensors": len(state), **config})
    (folder / CONFIG_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return folder


def log_model(
    model: torch.nn.Module, config: dict[str, Any], pip_requirements: list[str], name: str = "model"
) -> Any:
    """Log ``model`` to the active MLflow run as this pyfunc model; returns MLflow's ModelInfo.
    ``config`` (``vgg_weights``, ``params_digest``, ...) goes into ``config.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = write_model_data(model, Path(tmp) / DATA_DIR, config)
        return mlflow.pyfunc.log_model(
            name=name,
            loader_module=__name__,
            data_path=str(data),
            pip_requirements=pip_requirements,
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
    return FusionModel(
        model.to(device=placement.device, memory_format=torch.channels_last), placement
    )


def _decode(value: Any, role: str) -> tuple[np.ndarray, bool]:
    """(0..1 float image, whether it came as base64 file bytes) from one request value."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        value = value.item()
    if isinstance(value, bytes | str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"{role}: not base64 image bytes ({exc})") from exc
        suffix = next((s for m, s in IMAGE_MAGIC.items() if raw.startswith(m)), None)
        if suffix is None:
            raise ImageError(f"{role}: not a PNG, BMP, JPEG or TIFF image")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f"{role}{suffix}").write_bytes(raw)
            return read_image(Path(tmp) / f"{role}{suffix}"), True
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"{role}: not an image (base64 bytes or nested lists)") from exc
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageError(f"{role}: expected HxW or HxWx3 values, got shape {array.shape}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ImageError(f"{role}: values must be finite and within 0..1")
    return array, False


def _encode(image: np.ndarray) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_image(Path(tmp) / "fused.png", image)
        return base64.b64encode(path.read_bytes()).decode("ascii")


class FusionModel:
    """What ``_load_pyfunc`` returns: ``predict`` fuses the request's pairs."""

    def __init__(self, model: CoCoNet, placement: Placement) -> None:
        self.model = model.eval()
        self.placement = placement

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """A DataFrame with columns ``vis`` and ``ir`` (one row per pair) -> DataFrame with
        ``fused``; a dict ``{"vis": ..., "ir": ...}`` (one pair) -> ``{"fused": ...}``."""
        if isinstance(model_input, dict):
            return {"fused": self._fuse_one(model_input)}
        if not isinstance(model_input, pd.DataFrame):
            raise ImageError(f"expected a DataFrame or dict input, got {type(model_input)}")
        fused = [self._fuse_one(row) for row in model_input.to_dict("records")]
        return pd.DataFrame({"fused": fused})

    def _fuse_one(self, pair: dict[str, Any]) -> str | list:
        missing = [k for k in ("vis", "ir") if k not in pair]
        if missing:
            raise ImageError(f"request lacks {', '.join(missing)} (give vis and ir)")
        (vis, vis_b64), (ir, _) = _decode(pair["vis"], "vis"), _decode(pair["ir"], "ir")
        fused = fuse_arrays(self.model, vis, ir, self.placement)
        return _encode(fused) if vis_b64 else fused.tolist()
