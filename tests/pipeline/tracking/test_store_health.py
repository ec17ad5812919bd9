"""The embedded store's file and stale runs (pipeline.tracking.store_health): a damaged or empty
mlflow.db is one line and is never re-created by a read-only command; runs whose process is gone
are marked KILLED by the next command that opens the store."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.tracking import names
from pipeline.tracking.experiment import connect
from pipeline.tracking.store_file import StoreFileError
from pipeline.tracking.store_health import owner_tags

runner = CliRunner()


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text("model:\n  vgg_weights: random\n")
    return tmp_path


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "an empty file"), (b"garbage" * 100, "not an SQLite database"),
     (b"SQLite format 3\x00" + b"\x00" * 200, "damaged MLflow store")],
    ids=["empty", "garbage", "truncated"],
)  # fmt: skip
def test_a_broken_store_is_one_line_and_left_as_it_is(project, content, needle):
    db = project / "mlflow.db"
    db.write_bytes(content)
    for command in (["lineage", "--root", str(project)], ["lineage", "--verify", "--root",
                                                           str(project)]):  # fmt: skip
        result = runner.invoke(app, command)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and f"{db}:" in lines[0] and needle in lines[0], lines
        assert "move it aside to start a fresh store" in lines[0]
    assert db.read_bytes() == content  # never re-created or rewritten
    with pytest.raises(StoreFileError):
        connect(project, create=True)


def test_a_killed_run_is_marked_by_the_next_command_of_any_kind(project):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(project / "a").as_uri())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    tags = {**owner_tags(project), names.OWNER_PID: dead}
    stale = client.create_run(experiment, tags=tags).info.run_id
    live = client.create_run(experiment, tags={**tags, names.OWNER_PID: str(os.getpid())})
    other = client.create_run(experiment, tags={**tags, names.OWNER_ROOT: "/elsewhere"})
    connect(project)  # what lineage, fuse --model models:/..., evaluate and register call
    assert client.get_run(stale).info.status == "KILLED"
    assert "process" in client.get_run(stale).data.tags[names.KILLED_REASON]
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
