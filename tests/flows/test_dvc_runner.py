"""The environment the flows run DVC and the stages in."""

from __future__ import annotations

import subprocess
import sys

from flows.dvc_runner import dvc_env

BAR = "import time, tqdm\nfor _ in tqdm.tqdm(range(150)): time.sleep(0.01)\n"


def _refreshes(env: dict[str, str]) -> int:
    """Progress-bar refreshes a stage would print (each one a log line in a flow)."""
    run = subprocess.run([sys.executable, "-c", BAR], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return len([line for line in run.stderr.replace("\r", "\n").splitlines() if line.strip()])


def test_progress_bars_do_not_flood_the_flow_log(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    env = dvc_env()
    assert _refreshes(env) <= 3  # the first and the last state
    noisy = {k: v for k, v in env.items() if k != "TQDM_MININTERVAL"}
    assert _refreshes(noisy) > 5  # what the flow log got before


def test_the_users_progress_setting_wins(monkeypatch):
    monkeypatch.setenv("TQDM_MININTERVAL", "0.5")
    assert dvc_env()["TQDM_MININTERVAL"] == "0.5"
