"""MLflow tracking setup shared by the train, evaluate and register stages, fuse and lineage.

The embedded default is a SQLite store ``mlflow.db`` in the project root with artifacts in
``./mlartifacts``; ``MLFLOW_TRACKING_URI`` in the environment wins over ``params.tracking.uri``.
Under DDP only rank 0 calls anything here that touches MLflow.

MLflow records artifact locations as absolute paths, so a copied or moved project's store still
points at the original's artifacts. Every use of the store goes through :func:`connect`, which
refuses (:class:`StoreError`) a store inside the project whose experiments keep their artifacts
outside it, and a SQLite store that does not exist yet unless the caller creates one (training).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from filelock import FileLock
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import ViewType

from pipeline.core.params import PROJECT_ROOT, Params, TrackingParams
from pipeline.tracking import names
from pipeline.tracking.dvc_lock import LOCK_FILE as DVC_LOCK_FILE
from pipeline.tracking.dvc_lock import stage_out_hashes
from pipeline.tracking.server import check_server, is_server
from pipeline.tracking.store_file import (
    StoreError,
    check_artifact_locations,
    check_sqlite_store,
    missing_store,
    resolve_tracking_uri,
    sqlite_file,
    tracking_params,
)
from pipeline.tracking.store_health import mark_stale_runs

DATA_STAGES = ("download", "masks", "patches")
log = logging.getLogger(__name__)


def connect(
    root: Path = PROJECT_ROOT,
    tracking: TrackingParams | None = None,
    uri: str | None = None,
    create: bool = False,
) -> str:
    """Check the store (``uri``, default the configured one) and point MLflow at it.

    A SQLite file that does not exist is refused unless ``create``; an empty, foreign or damaged
    one always (:mod:`pipeline.tracking.store_health`); a tracking server must answer its health
    check (:mod:`pipeline.tracking.server`). Runs of this project whose process is
    gone are marked KILLED. For a SQLite file inside
    ``root`` (the embedded store), every experiment but MLflow's unused Default must keep its
    artifacts inside ``root`` or under ``tracking.artifact_root``: a copied or moved project
    still records the original's absolute paths and would read and write them.
    """
    root = root.resolve()
    tracking = tracking or tracking_params(root)
    uri = uri or resolve_tracking_uri(tracking.uri, root)
    db = sqlite_file(uri)
    if is_server(uri):
        check_server(uri)
    if db is not None and not db.is_file() and not create:
        raise missing_store(db)
    if db is not None and db.is_file():
        check_sqlite_store(db)
        if db.is_relative_to(root):
            _check_locations(uri, db, root, tracking)
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # also exports MLFLOW_TRACKING_URI: undo that, or a later
    if user_uri is None:  # connect() for another root would take it for the user's choice
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_uri
    if db is None or db.is_file():
        for run_id in mark_stale_runs(uri, root):
            log.warning("marked MLflow run %s KILLED: its process is gone", run_id)
    return uri


def _check_locations(uri: str, db: Path, root: Path, tracking: TrackingParams) -> None:
    experiments = mlflow.MlflowClient(uri).search_experiments(view_type=ViewType.ALL)
    check_artifact_locations(
        ((e.experiment_id, e.name, e.artifact_location) for e in experiments), db, root, tracking
    )


def setup_experiment(params: Params, root: Path = PROJECT_ROOT) -> str:
    """Point MLflow at the configured store (checked by :func:`connect`, created if missing)
    and return the experiment id, creating the experiment (with its artifact location) if
    missing, tagged as a model-training experiment. A file lock (in the temp folder, one per
    store) makes the first creation safe when several processes start at once."""
    uri = connect(root, params.tracking, create=True)
    lock = (
        Path(tempfile.gettempdir())
        / f"coconet-mlflow-{hashlib.sha1(uri.encode()).hexdigest()[:12]}.lock"
    )
    with FileLock(str(lock)):
        experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            location: str | None = params.tracking.artifact_root
            if location is not None and "://" not in location:
                # a tracking server proxies artifacts (mlflow-artifacts:): never a local path
                served = urlparse(uri).scheme in ("http", "https")
                location = None if served else (root / location).resolve().as_uri()
            experiment_id = mlflow.create_experiment(
                params.tracking.experiment, artifact_location=location
            )
    mlflow.set_experiment(experiment_id=experiment_id)
    mlflow.set_experiment_tag(names.EXPERIMENT_KIND, names.EXPERIMENT_KIND_VALUE)
    return experiment_id


def flatten_params(params: Params) -> dict[str, str]:
    """Every params section flattened to ``section.key`` -> string (lists as JSON)."""
    flat: dict[str, str] = {}
    for section, values in params.model_dump(mode="json", by_alias=True).items():
        for key, value in values.items():
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            flat[f"{section}.{key}"] = text
    return flat


def log_data_inputs(
    lock_path: Path = DVC_LOCK_FILE, root: Path = PROJECT_ROOT, context: str = "training"
) -> list[dict[str, Any]]:
    """Log each data-stage output recorded in ``dvc.lock`` as an MLflow dataset input whose
    digest is DVC's md5 (so a run names exactly the data, masks and patches it used); no
    ``dvc.lock`` (a run outside ``dvc repro``) logs nothing."""
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


def attach_uri(info: dict[str, Any], root: Path = PROJECT_ROOT) -> str:
    """The tracking URI a later stage uses to reopen the training run (checked by
    :func:`connect` and set): the environment's ``MLFLOW_TRACKING_URI`` if set, else the one
    recorded by training, unless that is a SQLite store other than this project's that no
    longer exists or lies in another project (a copied or moved project's record)."""
    root = root.resolve()
    tracking = tracking_params(root)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = env or info["tracking_uri"]
    db = None if env else sqlite_file(uri)
    if db is not None and db != sqlite_file(resolve_tracking_uri(tracking.uri, root)):
        owner = next((p for p in db.parents if (p / "dvc.yaml").is_file()), None)
        if not db.is_file() or owner not in (None, root):
            where = "which no longer exists" if not db.is_file() else f"the store of {owner}"
            raise StoreError(
                f"{root / 'artifacts' / 'train_run.json'}: the training run was recorded in "
                f"{uri}, {where}: the project was copied or moved; retrain here "
                "(dvc repro train) or set MLFLOW_TRACKING_URI"
            )
    return connect(root, tracking, uri)
