"""The quick process end of one-shot commands: atexit handlers run, output is flushed, the exit
status kept; only the interpreter's teardown is skipped, and never while a thread still works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.defaults import PROJECT_ROOT

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from pipeline.cli import teardown
out, mode, code = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

class Marker:
    def __del__(self):  # a module global: freed by the interpreter's teardown
        (out / "teardown").write_text("ran")

marker = Marker()
atexit.register(lambda: (out / "atexit").write_text("ran"))
if mode != "normal":
    teardown.skip_teardown()
if mode == "thread":
    def late():
        time.sleep(0.5)
        (out / "thread").write_text("done")
    threading.Thread(target=late).start()
sys.stdout.write("buffered, no newline")
try:
    sys.exit(int(code) if code.isdigit() else code)
except SystemExit as done:
    teardown.end_process(done.code)
    raise
"""


def _run(tmp_path: Path, mode: str, code: str = "3") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), mode, code],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["normal", "skip"])
def test_the_skipped_teardown_keeps_status_output_and_atexit(tmp_path, mode):
    done = _run(tmp_path, mode)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newline"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "teardown").exists() == (mode == "normal")


def test_a_message_exit_prints_it_and_returns_one(tmp_path):
    done = _run(tmp_path, "skip", "no model here")
    assert done.returncode == 1
    assert done.stderr.strip() == "no model here"
    assert not (tmp_path / "teardown").exists()


def test_a_running_thread_gets_the_normal_exit(tmp_path):
    done = _run(tmp_path, "thread")
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "teardown").exists()
