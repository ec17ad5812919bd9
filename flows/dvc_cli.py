"""Run DVC commands in a project as subprocesses, streaming their output line by line.

The flows drive DVC through its command line (``python -m dvc``, from the same environment),
so DVC's cache and ``dvc.lock`` stay the single record of what ran.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.core.errors import CoconetError

SKIPPED_MARK = "didn't change, skipping"


class DvcError(CoconetError, RuntimeError):
    """A DVC command exited non-zero; the message carries the end of its output."""


@dataclass
class DvcResult:
    """What one DVC command did."""

    args: list[str]
    returncode: int
    seconds: float
    lines: list[str] = field(default_factory=list)

    @property
    def tail(self) -> str:
        return "\n".join(self.lines[-20:])


def dvc_env() -> dict[str, str]:
    """The environment for DVC and its stage commands: this interpreter's ``bin`` first on
    PATH, so a stage's ``python -m pipeline.x`` runs in the same environment as the flow."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_dvc(
    args: list[str],
    root: Path,
    log: Callable[[str], None] | None = None,
    check: bool = True,
    keep: int = 2000,
) -> DvcResult:
    """Run ``dvc <args>`` in ``root``; each output line goes to ``log`` as it appears."""
    import time

    log = log or logging.getLogger(__name__).info
    cmd = [sys.executable, "-m", "dvc", *args]
    start = time.perf_counter()
    lines: deque[str] = deque(maxlen=keep)
    with subprocess.Popen(
        cmd,
        cwd=root,
        env=dvc_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            for line in raw.replace("\r", "\n").splitlines():  # progress bars use \r
                if line.strip():
                    lines.append(line)
                    log(line)
    result = DvcResult(list(args), proc.returncode, time.perf_counter() - start, list(lines))
    if check and proc.returncode != 0:
        raise DvcError(f"dvc {' '.join(args)} failed (exit {proc.returncode}):\n{result.tail}")
    return result


def stage_names(root: Path) -> list[str]:
    """The stages of ``dvc.yaml`` in file order (the pipeline order)."""
    path = root / "dvc.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no DVC pipeline here")
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))


def pending_stages(root: Path) -> dict[str, list]:
    """``dvc status --json``: the stages (or .dvc files) whose inputs or outputs changed."""
    import json

    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=root,
        env=dvc_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise DvcError(f"dvc status failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout or "{}")
