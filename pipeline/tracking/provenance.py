"""The code version a run used: the git commit and whether the checkout had uncommitted
changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.core.params import PROJECT_ROOT


def git_state(root: Path = PROJECT_ROOT) -> tuple[str, bool]:
    """The HEAD commit and whether tracked files other than ``dvc.lock`` differ from it
    (DVC rewrites ``dvc.lock`` while the pipeline runs, which says nothing about the code);
    ``("unknown", False)`` outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(exclude)dvc.lock"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(status.strip())


def git_tags(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Tags recording the code version: MLflow's source-commit tag plus our own."""
    commit, dirty = git_state(root)
    return {
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
    }
