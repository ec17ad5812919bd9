"""``--set key=value`` overrides: edit ``params.yaml`` in place (comments kept), validated.

Like ``dvc exp run -S`` on the workspace, the change stays in ``params.yaml``, so ``dvc.lock``
and ``git diff`` record exactly what the run used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from dvc.utils.serialize import modify_yaml

from pipeline.core.params import ParamsError, load_params


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.001"`` -> (["train", "lr"], 0.001); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {text!r}: expected section.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ParamsError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.strip().split("."), parsed


def apply_overrides(params_path: Path, overrides: list[str]) -> dict[str, Any]:
    """Set each ``key=value`` in ``params_path``; the file is left unchanged if the result does
    not validate. Returns ``{key: value}`` as applied."""
    parsed = [parse_override(o) for o in overrides]
    if not parsed:
        return {}
    before = params_path.read_text()
    try:
        with modify_yaml(params_path) as data:
            for keys, value in parsed:
                node = data
                for key in keys[:-1]:
                    if key not in node:
                        raise ParamsError(f"{params_path}: no section {'.'.join(keys[:-1])!r}")
                    node = node[key]
                node[keys[-1]] = value
        load_params(params_path)
    except BaseException:
        params_path.write_text(before)
        raise
    return {".".join(k): v for k, v in parsed}
