"""Read the hashes DVC recorded in ``dvc.lock``: the single record of what each stage ran on.

``dvc.lock`` (schema 2.0) lists, per stage, ``deps`` and ``outs`` entries with ``path`` and
``md5`` (a directory's md5 ends in ``.dir``). These helpers flatten that into plain dicts so
that the train and register stages can tag MLflow runs and model versions with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import InputError
from pipeline.core.params import PROJECT_ROOT

LOCK_FILE = PROJECT_ROOT / "dvc.lock"


def read_lock(lock_path: str | Path = LOCK_FILE) -> dict[str, Any]:
    """The parsed ``dvc.lock``; an empty dict when the file does not exist yet."""
    path = Path(lock_path)
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a dvc.lock file")
    return data


def _hashes(entries: list[dict[str, Any]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries or []:
        digest = entry.get("md5") or entry.get("etag") or entry.get("checksum")
        if entry.get("path") and digest:
            out[str(entry["path"])] = str(digest)
    return out


def stage_out_hashes(lock_path: str | Path = LOCK_FILE) -> dict[str, dict[str, str]]:
    """``{stage: {out_path: md5}}`` for every stage in ``dvc.lock`` (uncached outs included)."""
    stages = read_lock(lock_path).get("stages", {}) or {}
    return {name: _hashes(stage.get("outs")) for name, stage in stages.items()}
