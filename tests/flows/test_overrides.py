"""``--set key=value`` overrides of params.yaml (flows.overrides)."""

from __future__ import annotations

import pytest

from flows.overrides import apply_overrides
from pipeline.core.params import PROJECT_ROOT, ParamsError, load_params


def test_overrides_edit_params_in_place_and_validate(tmp_path):
    params = tmp_path / "params.yaml"
    comment = "# a comment the user wrote\n"  # params.yaml itself is composed, comment-free
    params.write_text(comment + (PROJECT_ROOT / "params.yaml").read_text())
    applied = apply_overrides(params, ["train.phase1_epochs=1", "download.datasets=[tno40]"])
    assert applied == {"train.phase1_epochs": 1, "download.datasets": ["tno40"]}
    loaded = load_params(params)
    assert loaded.train.phase1_epochs == 1 and loaded.download.datasets == ["tno40"]
    assert params.read_text().startswith(comment)  # comments kept
    before = params.read_text()
    for bad in ("train.batch_size=-3", "nosection.key=1", "novalue"):
        with pytest.raises(ParamsError):
            apply_overrides(params, [bad])
        assert params.read_text() == before
