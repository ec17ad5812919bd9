"""``coconet import-official``: the output is never the input nor an existing file without
--force, and a location that cannot be created fails before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.params import PROJECT_ROOT

OFFICIAL = PROJECT_ROOT.parent / "shared" / "official_coconet" / "latest.pth"
runner = CliRunner()


def _import(*args) -> object:
    return runner.invoke(app, ["import-official", *(str(a) for a in args)])


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    if not OFFICIAL.is_file():
        pytest.skip(f"no official checkpoint at {OFFICIAL}")
    copy = tmp_path / "latest.pth"
    copy.write_bytes(OFFICIAL.read_bytes())
    return copy


def test_the_input_is_never_overwritten(checkpoint):
    before = checkpoint.read_bytes()
    for extra in ([], ["--force"]):
        result = _import(checkpoint, "-o", checkpoint, *extra)
        assert result.exit_code == 2 and "is the checkpoint being converted" in result.output
    assert checkpoint.read_bytes() == before


def test_an_existing_output_needs_force(checkpoint, tmp_path):
    out = tmp_path / "converted.pt"
    out.write_bytes(b"keep me")
    refused = _import(checkpoint, "-o", out)
    assert refused.exit_code == 2 and "exists; pass --force" in refused.output
    assert out.read_bytes() == b"keep me"
    done = _import(checkpoint, "-o", out, "--force")
    assert done.exit_code == 0, done.output
    assert "state_dict" in torch.load(out, weights_only=True)


def test_an_output_under_a_file_fails_before_converting(checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _import(checkpoint, "-o", blocker / "sub" / "out.pt")
    assert result.exit_code == 2 and f"{blocker} is a file, not a folder" in result.output
    assert "Traceback" not in result.output
