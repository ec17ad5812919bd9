"""params.yaml: the committed defaults validate, bad values are named."""

from __future__ import annotations

import pytest
import yaml

from pipeline.params import PARAMS_FILE, ParamsError, load_params


def test_committed_params_are_valid_and_follow_the_paper():
    params = load_params(PARAMS_FILE)
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
