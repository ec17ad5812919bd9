"""The MLflow store's address and the embedded store's database file, without importing MLflow.

Which store a project uses (``MLFLOW_TRACKING_URI``, else ``tracking.uri`` made absolute against
the project root), its SQLite file, and the file checks every command makes before MLflow
touches it: an empty, foreign or damaged ``mlflow.db`` is refused in one line naming the file and
the way out (MLflow would print a database traceback, or silently create fresh tables in an
empty file). Read-only; :mod:`pipeline.tracking.experiment` and the light registry read
(:mod:`pipeline.tracking.sqlite_registry`) share it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline.core.errors import CoconetError
from pipeline.core.params import PROJECT_ROOT, TrackingParams, load_params

SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(CoconetError, RuntimeError):
    """The MLflow store is missing, or is another copy of the project's."""


class StoreFileError(CoconetError, RuntimeError):
    """The embedded store's database file is empty, not SQLite or damaged."""


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


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (resolved); None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).resolve()


def local_path(location: str, root: Path) -> Path | None:
    """The folder of a ``file:`` or plain-path artifact location (a relative one against
    ``root``); None for remote ones."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    return (root / location).resolve() if not parsed.scheme else None


def tracking_params(root: Path) -> TrackingParams:
    """The project's ``tracking`` params (defaults without a ``params.yaml``)."""
    path = root / "params.yaml"
    return load_params(path).tracking if path.is_file() else TrackingParams()


def missing_store(db: Path) -> StoreError:
    """The error for a SQLite store that does not exist (nothing is created)."""
    return StoreError(
        f"{db}: no MLflow store here; run the pipeline first (dvc repro) or set MLFLOW_TRACKING_URI"
    )


def check_artifact_locations(
    experiments: Iterable[tuple[str, str, str | None]],
    db: Path,
    root: Path,
    tracking: TrackingParams,
) -> None:
    """Refuse an embedded store inside ``root`` one of whose experiments (id, name, artifact
    location) keeps its artifacts outside the project: the project was copied or moved with its
    store, which still names the original's folders (experiment 0 and remote locations aside)."""
    allowed = [root, local_path(tracking.artifact_root, root) or root]
    for experiment_id, name, location in experiments:
        path = local_path(location or "", root)
        if str(experiment_id) == "0" or path is None:
            continue
        if not any(path.is_relative_to(a) for a in allowed):
            raise StoreError(
                f"{db}: experiment {name!r} keeps its artifacts in {path}, outside this "
                f"project ({root}): the project was copied or moved with its MLflow store; "
                "move it back, or start a fresh store here (remove mlflow.db and mlartifacts/, "
                "then dvc repro), or set MLFLOW_TRACKING_URI"
            )


def check_sqlite_store(db: Path) -> None:
    """Refuse an empty, foreign or damaged SQLite file (read only; nothing is created)."""
    way_out = (
        "restore it from a backup, or move it aside to start a fresh store (remove mlflow.db "
        "and mlartifacts/, then dvc repro); or set MLFLOW_TRACKING_URI"
    )
    with open(db, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header:
        raise StoreFileError(f"{db}: the MLflow store is an empty file; {way_out}")
    if header != SQLITE_HEADER:
        raise StoreFileError(f"{db}: not an SQLite database (damaged MLflow store); {way_out}")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            verdict = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreFileError(f"{db}: a damaged MLflow store ({exc}); {way_out}") from exc
    if verdict != "ok":
        raise StoreFileError(f"{db}: a damaged MLflow store ({verdict}); {way_out}")
