"""What produced a model (pipeline.tracking.provenance): the code version and the data."""

from __future__ import annotations

import subprocess

from pipeline.core.params import PROJECT_ROOT
from pipeline.tracking.provenance import git_state, git_tags


def test_git_tags_name_the_commit():
    tags = git_tags(PROJECT_ROOT)
    commit = tags["git_commit"]
    assert tags["mlflow.source.git.commit"] == commit
    assert commit == "unknown" or len(commit) == 40
    assert tags["git_dirty"] in {"true", "false"}


def test_git_state_ignores_dvc_lock(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.lock").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    commit, dirty = git_state(tmp_path)
    assert len(commit) == 40 and not dirty
    (tmp_path / "dvc.lock").write_text("b\n")  # DVC rewrites it during repro
    assert git_state(tmp_path) == (commit, False)
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (commit, True)
