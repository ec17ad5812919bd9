"""``models:/<name>@<alias>`` and ``models:/<name>/<version>`` read straight from an embedded
SQLite store, without importing MLflow or starting its store (SQLAlchemy, the schema check):
``coconet fuse --model models:/coconet@champion`` then costs what a model file costs.

The same checks as :func:`pipeline.tracking.experiment.connect` come first (the file exists and
is sound, a store inside the project keeps its artifacts inside it). The read is taken only
where it is exactly what MLflow would answer; :func:`model_folder` returns None, and the caller
goes through MLflow, whenever it is not: another kind of store or URI, a schema revision other
than :data:`SCHEMA_REVISION` (MLflow's head when this was written; a test pins it to the
installed MLflow's), an alias or version not found or not READY (MLflow words the error), an
artifact location that is not a local folder, or a run of this project left RUNNING by a dead
process (MLflow's path marks it KILLED).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from pipeline.core.params import PROJECT_ROOT
from pipeline.tracking import names
from pipeline.tracking.run_owner import is_stale, owner_tags
from pipeline.tracking.store_file import (
    check_artifact_locations,
    check_sqlite_store,
    local_path,
    missing_store,
    resolve_tracking_uri,
    sqlite_file,
    tracking_params,
)

SCHEMA_REVISION = "dc11669786a5"  # alembic head of the MLflow this read was written against
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?")
_STALE_RUNS = """
    SELECT pid.value FROM runs
    JOIN tags AS owner_root ON owner_root.run_uuid = runs.run_uuid AND owner_root.key = ?
    JOIN tags AS owner_host ON owner_host.run_uuid = runs.run_uuid AND owner_host.key = ?
    LEFT JOIN tags AS pid ON pid.run_uuid = runs.run_uuid AND pid.key = ?
    WHERE runs.status = 'RUNNING' AND runs.lifecycle_stage = 'active'
      AND owner_root.value = ? AND owner_host.value = ?
"""


def _has_stale_runs(connection: sqlite3.Connection, root: Path) -> bool:
    """Whether a run of ``root`` on this host is RUNNING although its process is gone."""
    owner = owner_tags(root)
    keys = (names.OWNER_ROOT, names.OWNER_HOST, names.OWNER_PID)
    values = (owner[names.OWNER_ROOT], owner[names.OWNER_HOST])
    pids = [pid for (pid,) in connection.execute(_STALE_RUNS, (*keys, *values))]
    return any(is_stale(pid or "", owner) for pid in pids)


def _version(connection: sqlite3.Connection, name: str, alias: str | None, version: str | None):
    if alias is not None:
        rows = connection.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
            (name, alias),
        ).fetchall()
        if len(rows) != 1:
            return None
        version = str(rows[0][0])
    rows = connection.execute(
        "SELECT status, current_stage, storage_location FROM model_versions "
        "WHERE name = ? AND version = ?",
        (name, int(version)),
    ).fetchall()
    return rows[0] if len(rows) == 1 else None


def model_folder(uri: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The local folder of the model version ``uri`` names in the project's SQLite store, or
    None where only MLflow can answer (see the module docstring). A missing, damaged or
    relocated embedded store raises as :func:`~pipeline.tracking.experiment.connect` does."""
    match = MODEL_URI.fullmatch(uri)
    root = root.resolve()
    tracking = tracking_params(root)
    store = resolve_tracking_uri(tracking.uri, root)
    db = sqlite_file(store)
    if match is None or db is None:
        return None
    if not db.is_file():
        raise missing_store(db)
    check_sqlite_store(db)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        try:
            revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
            if revision != [(SCHEMA_REVISION,)]:
                return None
            if db.is_relative_to(root):  # as connect checks it
                rows = connection.execute(
                    "SELECT experiment_id, name, artifact_location FROM experiments"
                )
                check_artifact_locations(rows, db, root, tracking)
            if _has_stale_runs(connection, root):
                return None
            found = _version(connection, match["name"], match["alias"], match["version"])
        except sqlite3.Error:  # locked, or tables that differ: MLflow's path will say
            return None
    if found is None or found[0] != "READY" or found[1] == "Deleted_Internal":
        return None
    folder = local_path(found[2] or "", root)
    return folder if folder is not None and (folder / "MLmodel").is_file() else None
