"""Fusion models from the MLflow store: ``models:/coconet@champion``, ``runs:/<id>/model``.

The store is checked first (:func:`pipeline.tracking.experiment.connect`: it must exist and
belong to this project); the model folder is downloaded and read by
:mod:`pipeline.tracking.pyfunc_model`: safetensors weights and a JSON config, nothing unpickled
and no code from the store run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException

from models.coconet import CoCoNet
from pipeline.core.errors import CoconetError
from pipeline.core.params import PROJECT_ROOT
from pipeline.tracking import pyfunc_model
from pipeline.tracking.experiment import connect


class ModelStoreError(CoconetError, ValueError):
    """An MLflow model URI that cannot be resolved or loaded."""


def load_registered_model(uri: str, root: Path = PROJECT_ROOT) -> CoCoNet:
    """A CoCoNet (eval mode, on the CPU) from an MLflow model URI, in the store of the project
    at ``root``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="coconet-model-") as tmp:
        try:
            connect(root)
            folder = download_artifacts(artifact_uri=uri, dst_path=tmp)
            return pyfunc_model.load_model_dir(folder)
        except (MlflowException, OSError) as exc:
            detail = getattr(exc, "message", None) or str(exc)
            raise ModelStoreError(f"{uri}: cannot load the MLflow model ({detail})") from exc
        except CoconetError as exc:  # name files inside the model, not the temporary copy
            raise ModelStoreError(f"{uri}: {str(exc).replace(tmp + os.sep, '')}") from exc
