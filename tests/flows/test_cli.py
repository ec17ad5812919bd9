"""The flows' commands refuse bad params in one line, before Prefect starts."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "content", ["train: [unclosed\n", "train:\n  lr: abc\n", "- just\n- a list\n"]
)
def test_run_with_broken_params_is_one_error_line(tmp_path, content):
    (tmp_path / "params.yaml").write_text(content)
    run = subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import main; main()", "run", "--root",
         str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1
    assert "Traceback" not in run.stderr + run.stdout and "prefect" not in run.stderr.lower()
    assert run.stderr.startswith(f"error: {tmp_path / 'params.yaml'}"), run.stderr
