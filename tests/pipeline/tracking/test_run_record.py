"""``artifacts/train_run.json`` (pipeline.tracking.run_record)."""

from __future__ import annotations

import pytest

from pipeline.tracking.run_record import read_run_info, write_run_info


def test_run_info_round_trip_and_errors(tmp_path):
    path = tmp_path / "artifacts" / "train_run.json"
    with pytest.raises(FileNotFoundError, match="run the train stage first"):
        read_run_info(path)
    write_run_info({"run_id": "abc", "tracking_uri": "sqlite:///x.db"}, path)
    assert read_run_info(path)["run_id"] == "abc"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_run_info(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match="no run_id"):
        read_run_info(path)
