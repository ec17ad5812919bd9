"""Fusing image pairs with a trained CoCoNet: model loading, file and folder runs.

The array fusion itself (precision, memory budget, tiles, colour) is :mod:`pipeline.fusion`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from models.coconet import CoCoNet
from models.state import StateDictError, check_finite, coconet_from_state
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import (  # noqa: F401  (pair/output checks, torch-free, re-exported)
    ImageError,
    check_output,
    plan_directory,
    read_pair,
    to_grey,
    write_image,
)
from pipeline.fusion import FusionSettings, fuse_arrays
from pipeline.reference_models import OFFICIAL, official_checkpoint

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "file:/", "s3://", "gs://")
STATE_KEYS = ("state_dict", "model", "model_state_dict")


class ModelLoadError(CoconetError, ValueError):
    """A fusion model cannot be loaded from the given source."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ModelLoadError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)


def _state_dict_from(checkpoint: Any, source: str) -> tuple[dict[str, torch.Tensor], str]:
    if not isinstance(checkpoint, dict):
        raise ModelLoadError(f"{source}: expected a checkpoint dict, found {type(checkpoint)}")
    vgg_weights = str(checkpoint.get("vgg_weights", "random"))
    for key in STATE_KEYS:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(
            f"{source}: no model weights found (expected a 'state_dict' or 'model' entry)"
        )
    try:
        check_finite(state, source)
    except StateDictError as exc:
        raise ModelLoadError(str(exc)) from exc
    return state, vgg_weights


def checkpoint_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of a checkpoint file, read with ``weights_only=True``.

    The metadata holds ``vgg_weights`` and, for a converted official checkpoint, ``official``
    (which VGG-19 layers the file set).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    state, vgg_weights = _state_dict_from(checkpoint, str(path))
    meta = {"vgg_weights": vgg_weights, "official": checkpoint.get("official", {})}
    return state, meta


def load_checkpoint_model(path: str | Path) -> CoCoNet:
    """A CoCoNet from ``artifacts/model.pt`` or a training checkpoint ("model"/"state_dict"),
    built by :func:`models.state.coconet_from_state` (no VGG download needed)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(
            f"{path}: no such model file (train one with `uv run dvc repro train`, or pass "
            "--model with a checkpoint path or an MLflow URI such as models:/coconet@champion)"
        )
    state, meta = checkpoint_state(path)
    try:
        return coconet_from_state(state, meta["vgg_weights"], str(path))
    except StateDictError as exc:
        raise ModelLoadError(str(exc)) from exc


def load_mlflow_model(uri: str) -> CoCoNet:
    """A CoCoNet from an MLflow model URI (``models:/coconet@champion``, ``runs:/<id>/model``).

    The store is checked first (:func:`pipeline.tracking.experiment.connect`: it must exist and
    belong to this project); the model folder is downloaded and read by
    :mod:`pipeline.tracking.pyfunc_model`: safetensors weights and a JSON config, nothing
    unpickled and no code from the store run.
    """
    import os
    import tempfile

    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from pipeline.core.params import PROJECT_ROOT
    from pipeline.tracking import pyfunc_model
    from pipeline.tracking.experiment import connect

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="coconet-model-") as tmp:
        try:
            connect(PROJECT_ROOT)
            folder = download_artifacts(artifact_uri=uri, dst_path=tmp)
            return pyfunc_model.load_model_dir(folder)
        except (MlflowException, OSError) as exc:
            detail = getattr(exc, "message", None) or str(exc)
            raise ModelLoadError(f"{uri}: cannot load the MLflow model ({detail})") from exc
        except CoconetError as exc:  # name files inside the model, not the temporary copy
            raise ModelLoadError(f"{uri}: {str(exc).replace(tmp + os.sep, '')}") from exc


def load_fusion_model(source: str, device: str | torch.device = "cpu") -> CoCoNet:
    """A CoCoNet in eval mode on ``device``, from a checkpoint path, an MLflow model URI or
    ``official`` (the authors' trained model: downloaded, verified, converted once, cached)."""
    if source == OFFICIAL:
        source = str(official_checkpoint())
    is_uri = source.startswith(MLFLOW_SCHEMES) and not Path(source).exists()
    model = load_mlflow_model(source) if is_uri else load_checkpoint_model(source)
    device = resolve_device(device) if isinstance(device, str) else device
    return model.to(device=device, memory_format=torch.channels_last).eval()


def fuse_files(
    model: CoCoNet,
    vis_path: Path,
    ir_path: Path,
    out_path: Path,
    resize: bool = False,
    bits: int = 8,
    settings: FusionSettings | None = None,
) -> Path:
    """Fuse one pair of files into ``out_path`` (written atomically; a failed write raises
    ImageError naming ``out_path``)."""
    vis, ir = read_pair(Path(vis_path), Path(ir_path), resize)
    check_output(Path(out_path), vis.ndim == 3, bits)
    return write_image(out_path, fuse_arrays(model, vis, ir, settings), bits=bits)


def fuse_directory(
    model: CoCoNet,
    plan: Iterable[tuple[Path, Path, Path]],
    resize: bool = False,
    bits: int = 8,
    progress: Callable[[Iterable], Iterable] = iter,
    settings: FusionSettings | None = None,
) -> list[Path]:
    """Fuse every planned pair; ``progress`` wraps the iteration (e.g. a progress bar)."""
    return [fuse_files(model, v, i, o, resize, bits, settings) for v, i, o in progress(plan)]
