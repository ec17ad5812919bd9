"""params.yaml: the committed defaults validate, bad values are named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.core.params import PARAMS_FILE, PROJECT_ROOT, Params, ParamsError, load_params


def committed_params_file(tmp_path) -> Path:
    """params.yaml as committed (HEAD), not as a quick run's ``dvc exp run -S`` left it."""
    shown = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        return PARAMS_FILE  # not a git checkout: the file as it is
    path = tmp_path / "params.yaml"
    path.write_text(shown.stdout)
    return path


def test_workspace_params_are_valid():
    load_params(PARAMS_FILE)


def test_committed_params_follow_the_paper(tmp_path):
    params = load_params(committed_params_file(tmp_path))
    assert params.train.phase1_epochs == 30
    assert params.train.phase2_epochs == 2
    assert params.train.batch_size == 30
    assert params.train.lr == pytest.approx(1e-4)
    assert params.patches.size == 64


def test_invalid_value_names_the_file_and_key(tmp_path):
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw["train"]["batch_size"] = 0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"params.yaml: invalid params(.|\n)*batch_size"):
        load_params(bad)


def test_unknown_key_is_rejected(tmp_path):
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw["train"]["learning_rate"] = 1.0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="learning_rate"):
        load_params(bad)


def test_digest_changes_with_any_value():
    params = load_params(PARAMS_FILE)
    changed = params.model_copy(deep=True)
    changed.train.seed += 1
    assert params.digest() != changed.digest()


def test_schema_defaults_equal_the_committed_params(tmp_path):
    """pipeline/core/params.py and params.yaml state the same defaults (no silent second copy)."""
    committed = load_params(committed_params_file(tmp_path))
    assert Params().model_dump(by_alias=True) == committed.model_dump(by_alias=True)
