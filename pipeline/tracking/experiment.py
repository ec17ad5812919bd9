"""MLflow tracking setup shared by the train, evaluate and register stages.

The embedded default is a SQLite store ``mlflow.db`` in the project root with artifacts in
``./mlartifacts``; ``MLFLOW_TRACKING_URI`` in the environment wins over ``params.tracking.uri``.
Under DDP only rank 0 calls anything here that touches MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

from filelock import FileLock

from pipeline.core.errors import InputError
from pipeline.core.imageio import atomic_path
from pipeline.core.params import PROJECT_ROOT, Params
from pipeline.tracking.dvc_lock import LOCK_FILE as DVC_LOCK_FILE
from pipeline.tracking.dvc_lock import stage_out_hashes

RUN_INFO_FILE = PROJECT_ROOT / "artifacts" / "train_run.json"
DATA_STAGES = ("download", "masks", "patches")


def resolve_tracking_uri(uri: str, root: Path = PROJECT_ROOT) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``uri`` with a relative SQLite/file path made
    absolute against ``root`` (so every stage finds the same store whatever its cwd)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri:
        return (root / uri).resolve().as_uri()
    return uri


def setup_experiment(params: Params, root: Path = PROJECT_ROOT) -> str:
    """Point MLflow at the configured store and return the experiment id, creating the
    experiment (with its artifact location) if missing. A file lock (in the temp folder, one
    per store) makes the first creation safe when several processes start at once."""
    import mlflow

    uri = resolve_tracking_uri(params.tracking.uri, root)
    mlflow.set_tracking_uri(uri)
    lock = (
        Path(tempfile.gettempdir())
        / f"coconet-mlflow-{hashlib.sha1(uri.encode()).hexdigest()[:12]}.lock"
    )
    with FileLock(str(lock)):
        experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            location = params.tracking.artifact_root
            if "://" not in location:
                location = (root / location).resolve().as_uri()
            experiment_id = mlflow.create_experiment(
                params.tracking.experiment, artifact_location=location
            )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten_params(params: Params) -> dict[str, str]:
    """Every params section flattened to ``section.key`` -> string (lists as JSON)."""
    flat: dict[str, str] = {}
    for section, values in params.model_dump(mode="json", by_alias=True).items():
        for key, value in values.items():
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            flat[f"{section}.{key}"] = text
    return flat


def git_state(root: Path = PROJECT_ROOT) -> tuple[str, bool]:
    """The HEAD commit and whether tracked files other than ``dvc.lock`` differ from it
    (DVC rewrites ``dvc.lock`` while the pipeline runs, which says nothing about the code);
    ``("unknown", False)`` outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(exclude)dvc.lock"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(status.strip())


def git_tags(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Tags recording the code version: MLflow's source-commit tag plus our own."""
    commit, dirty = git_state(root)
    return {
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
    }


def log_data_inputs(
    lock_path: Path = DVC_LOCK_FILE, root: Path = PROJECT_ROOT, context: str = "training"
) -> list[dict[str, Any]]:
    """Log each data-stage output recorded in ``dvc.lock`` as an MLflow dataset input whose
    digest is DVC's md5 (so a run names exactly the data, masks and patches it used); no
    ``dvc.lock`` (a run outside ``dvc repro``) logs nothing."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    hashes = stage_out_hashes(lock_path)
    outs = [
        {"stage": stage, "path": path, "md5": md5}
        for stage in DATA_STAGES
        for path, md5 in hashes.get(stage, {}).items()
    ]
    for out in outs:
        with warnings.catch_warnings():  # "" and "file" schemes both map to the local source
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str((root / out["path"]).resolve()))
        dataset = MetaDataset(source, name=out["path"], digest=out["md5"])
        tags = {"dvc.stage": out["stage"], "dvc.md5": out["md5"]}
        mlflow.log_input(dataset, context=context, tags=tags)
    return outs


def write_run_info(info: dict[str, Any], path: Path = RUN_INFO_FILE) -> Path:
    """Write ``train_run.json`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_run_info(path: Path = RUN_INFO_FILE) -> dict[str, Any]:
    """Read ``train_run.json``; a missing or broken file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no training run record; run the train stage first "
            "(dvc repro train, or python -m pipeline.stages.train)"
        )
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(info, dict) or not info.get("run_id"):
        raise InputError(f"{path}: has no run_id")
    return info


def attach_uri(info: dict[str, Any]) -> str:
    """The tracking URI a later stage uses to reopen the training run: the environment's
    ``MLFLOW_TRACKING_URI`` if set, else the one recorded by training."""
    return os.environ.get("MLFLOW_TRACKING_URI") or info["tracking_uri"]
