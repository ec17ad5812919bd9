"""Running DVC commands in a project as subprocesses, streaming their output line by line.

The flows drive DVC through its command line (``python -m dvc``, from the same environment),
so DVC's cache and ``dvc.lock`` stay the single record of what ran.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.core.errors import CoconetError

SKIPPED_MARK = "didn't change, skipping"


class DvcError(CoconetError, RuntimeError):
    """A DVC command exited non-zero: a one-line message with the reason, the end of the
    command's output in ``output``."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def failure_reason(lines: list[str]) -> str:
    """The line that says why a DVC command failed: a stage's ``error:`` line, else DVC's
    ``ERROR:`` line, else the last line."""
    for prefix in ("error:", "ERROR:"):
        found = [line.strip() for line in lines if line.strip().startswith(prefix)]
        if found:
            return found[-1]
    return lines[-1].strip() if lines else "no output"


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


PROGRESS_INTERVAL_S = "30"  # a stage's progress bar: one log line per 30 s at most


def dvc_env() -> dict[str, str]:
    """The environment for DVC and its stage commands: this interpreter's ``bin`` first on
    PATH, so a stage's ``python -m pipeline.x`` runs in the same environment as the flow;
    progress bars (tqdm) refresh at most every ``PROGRESS_INTERVAL_S`` seconds, since every
    refresh becomes a log line (``TQDM_MININTERVAL`` in the environment wins; any non-empty
    ``TQDM_DISABLE`` turns them off)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TQDM_MININTERVAL", PROGRESS_INTERVAL_S)
    return env


def run_dvc(
    args: list[str],
    root: Path,
    log: Callable[[str], None] | None = None,
    check: bool = True,
    keep: int = 2000,
) -> DvcResult:
    """Run ``dvc <args>`` in ``root``; each output line goes to ``log`` as it appears."""
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
        reason = failure_reason(result.lines)
        raise DvcError(
            f"dvc {' '.join(args)} failed (exit {proc.returncode}): {reason}", result.tail
        )
    return result


def stage_names(root: Path) -> list[str]:
    """The stages of ``dvc.yaml`` in file order (the pipeline order)."""
    path = root / "dvc.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no DVC pipeline here")
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))


def pending_stages(root: Path) -> dict[str, list]:
    """``dvc status --json``: the stages (or .dvc files) whose inputs or outputs changed."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=root,
        env=dvc_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        reason = failure_reason(proc.stderr.splitlines())
        raise DvcError(f"dvc status failed (exit {proc.returncode}): {reason}", proc.stderr[-2000:])
    return json.loads(proc.stdout or "{}")


def _stage_outs(root: Path) -> list[tuple[Path, dict]]:
    """Every output of every ``dvc.yaml`` stage (outs, metrics, plots) with its options."""
    path = root / "dvc.yaml"
    if not path.is_file():
        return []
    found: list[tuple[Path, dict]] = []
    for stage in ((yaml.safe_load(path.read_text()) or {}).get("stages") or {}).values():
        base = root / stage.get("wdir", ".")
        for section in ("outs", "metrics", "plots"):
            for item in stage.get(section) or []:
                out, options = next(iter(item.items())) if isinstance(item, dict) else (item, {})
                found.append((base / out, options or {}))
    return found


def tracked_paths(root: Path) -> list[Path]:
    """What DVC tracks in the project: the stage outputs and the outputs of ``*.dvc`` files."""
    paths = [out for out, _ in _stage_outs(root)]
    for dvc_file in (p for p in root.glob("*.dvc") if p.is_file()):
        for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []:
            if isinstance(out, dict) and out.get("path"):
                paths.append(root / out["path"])
    return paths


def uncached_outs(root: Path) -> list[Path]:
    """Stage outputs of ``dvc.yaml`` that ``dvc checkout`` cannot restore: ``cache: false``
    outs, metrics and plots that DVC deletes before re-running their stage (not ``persist``)."""
    return [
        out
        for out, options in _stage_outs(root)
        if options.get("cache", True) is False and not options.get("persist", False)
    ]
