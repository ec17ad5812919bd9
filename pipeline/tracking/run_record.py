"""``artifacts/train_run.json``: the training's record (MLflow run id, tracking URI, model URI,
params digest) that the evaluate and register stages start from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_json
from pipeline.core.errors import InputError


def write_run_info(info: dict[str, Any], path: Path) -> Path:
    """Write ``train_run.json`` atomically."""
    return write_json(path, info)


def read_run_info(path: Path) -> dict[str, Any]:
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
