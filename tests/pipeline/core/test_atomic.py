"""Atomic writes: the temporary file sits beside the target and keeps its suffix, a failure (an
interrupt too) leaves the old file and no temporary behind, and JSON round-trips. (A failed
image write and the umask permissions are in tests/pipeline/core/test_imageio.py.)"""

from __future__ import annotations

import json

import pytest

from pipeline.core.atomic import atomic_path, atomic_write, write_json


def test_the_temporary_file_is_a_hidden_sibling_with_the_suffix(tmp_path):
    target = tmp_path / "new" / "deeper" / "model.pt"  # missing folders are made
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model.")
        assert tmp.suffix == ".pt" and not target.exists()
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights" and not tmp.exists()
    assert [p.name for p in target.parent.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path, error):
    target = tmp_path / "report.json"
    target.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_success_replaces_the_old_file_and_returns_the_target(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    assert atomic_write(str(target), lambda tmp: tmp.write_text("new")) == target
    assert target.read_text() == "new"


def test_write_json_round_trips_indented_with_a_final_newline(tmp_path):
    data = {"b": [1, 2.5, None], "a": {"ü": "x"}}
    path = write_json(tmp_path / "out.json", data)
    text = path.read_text()
    assert json.loads(text) == data and text.endswith("}\n") and '\n  "b"' in text
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})  # not JSON: the old file stays
    assert json.loads(path.read_text()) == data
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
