"""A worker's retrain shared with the team: its clone starts from the newest published state,
and what the retrain changed goes back as a git commit on a named branch plus a ``dvc push``.

With ``publish=BRANCH`` (``coconet retrain --publish``, ``coconet schedule --pool --publish``)
the retrain first needs a clean git worktree (so that the commit holds only what the retrain
changed), fast-forwards to ``origin/BRANCH`` when that exists and ``dvc pull``s; after a
successful run it commits ``dvc.lock``, params and catalogue changes on the current branch,
``dvc push``es the data and outputs to the default remote and pushes the commit to
``origin BRANCH``. The team merges that branch as any other.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from flows.dvc_runner import run_dvc
from pipeline.core.errors import CoconetError

REMOTE = "origin"


class PublishError(CoconetError, RuntimeError):
    """The clone cannot publish: a dirty worktree, no git remote, a failed push."""


def git(root: Path, *args: str) -> str:
    """Run git in ``root``; its stdout, or :class:`PublishError` with git's own reason."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise PublishError(f"git {' '.join(args)} in {root}: {reason[-1] if reason else 'failed'}")
    return done.stdout


def _identity(root: Path) -> list[str]:
    """``-c user.name/email`` for a worker without a git identity (commits say who made them)."""
    configured = subprocess.run(
        ["git", "config", "user.email"], cwd=root, capture_output=True, text=True
    )
    if configured.stdout.strip():
        return []
    host = socket.gethostname()
    return ["-c", f"user.name=coconet retrain on {host}", "-c", f"user.email=coconet@{host}"]


def prepare(root: Path, branch: str) -> None:
    """Before a publishing retrain changes anything: a clean worktree, the newest published
    commit of ``branch`` (fast-forward only) and its data (``dvc pull``)."""
    dirty = git(root, "status", "--porcelain", "--untracked-files=all").strip()
    if dirty:
        first = dirty.splitlines()[0]
        raise PublishError(
            f"{root}: publishing needs a clean git worktree (commit or stash first): {first}"
        )
    git(root, "remote", "get-url", REMOTE)
    git(root, "fetch", "--quiet", REMOTE)
    if git(root, "ls-remote", "--heads", REMOTE, branch).strip():
        git(root, "merge", "--ff-only", "--quiet", f"{REMOTE}/{branch}")
    run_dvc(["pull"], root)


def publish(root: Path, branch: str, message: str) -> str | None:
    """Commit what the retrain changed, push the data, push the commit to ``origin branch``;
    returns the commit, None when the retrain changed nothing git tracks."""
    git(root, "add", "-A")
    if not git(root, "diff", "--cached", "--name-only").strip():
        return None
    git(root, *_identity(root), "commit", "--quiet", "-m", message)
    commit = git(root, "rev-parse", "HEAD").strip()
    run_dvc(["push"], root)  # the data first: a pushed commit must never lack its data
    git(root, "push", "--quiet", REMOTE, f"HEAD:refs/heads/{branch}")
    return commit
