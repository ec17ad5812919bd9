"""The pipeline flow against a tiny throwaway DVC project: stage tasks, the report, and the
pipeline/retrain flows end to end on a temporary Prefect server (trivial python stages)."""

from __future__ import annotations

import json

import pytest
from filelock import FileLock

from flows.dvc_runner import pending_stages, stage_names
from flows.inbox.ingestion import read_catalogue
from flows.repro import metric_table
from flows.tasks import repro_stage
from tests.helpers.dvc_project import edited_test_copy, workspace_state, write_pair


def test_repro_stage_runs_then_skips(tiny):
    assert stage_names(tiny) == ["download", "evaluate", "register"]
    first = repro_stage.fn("download", str(tiny))
    assert first["ran"] and (tiny / "data/raw/count.txt").read_text() == "0"
    assert not repro_stage.fn("download", str(tiny))["ran"]
    (tiny / "data/raw/count.txt").write_text("changed")  # a stale output: DVC must notice
    assert repro_stage.fn("download", str(tiny))["ran"]
    assert repro_stage.fn("evaluate", str(tiny), known_up_to_date=True)["ran"] is False
    assert "download" not in pending_stages(tiny) and "evaluate" in pending_stages(tiny)


def test_metric_table_marks_directions():
    table = metric_table({"VIF": 0.5, "Nabf": 0.1}, {"avg": {"VIF": 0.25}})
    assert "VIF ↑" in table and "Nabf ↓" in table
    assert "| CoCoNet | **0.5000** | **0.1000** |" in table and "| avg | 0.2500 | – |" in table


@pytest.mark.slow
def test_flows_end_to_end(tiny, prefect_server, monkeypatch):
    """pipeline flow twice (second is a no-op), retrain with nothing new, retrain on a new pair,
    a failing retrain that leaves the inbox intact, and a retrain refused by the lock."""
    from prefect.client.orchestration import get_client

    from flows.repro import run_pipeline
    from flows.retrain import lock_path, retrain

    first = run_pipeline(str(tiny))
    assert first["ran"] == ["download", "evaluate", "register"]
    assert "| CoCoNet | **0.5000** |" in first["report"] and "version **0**" in first["report"]
    assert "## Metrics: tiny" in first["report"]
    assert (
        "[model version](http://127.0.0.1:5000/#/models/coconet/versions/0?workflowType="
        in first["report"]
    )
    second = run_pipeline(str(tiny))
    assert second["ran"] == [] and "register was up to date" in second["report"]

    async def artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    import asyncio

    keys = {a.key for a in asyncio.run(artifact())}
    assert "coconet-pipeline" in keys

    inbox = tiny / "inbox"
    assert retrain(str(tiny), str(inbox))["status"] == "nothing new"

    write_pair(inbox / "n1")
    done = retrain(str(tiny), str(inbox))
    assert done["status"] == "retrained" and done["ingested"] == ["n1"]
    assert done["ran"] == ["download", "evaluate", "register"]
    assert done["registered"]["version"] == "2"  # two inbox files reached the stages
    assert not (inbox / "n1").exists() and (tiny / "incoming/n1/vis.png").is_file()

    edited_test_copy(tiny, inbox / "leak")  # an edited copy of the test pair: never trained on
    refused = retrain(str(tiny), str(inbox))
    assert refused["status"] == "nothing new" and "test pair tiny/t1" in refused["rejected"]["leak"]

    write_pair(inbox / "n2")
    monkeypatch.setenv("TINY_FAIL", "register")
    before = workspace_state(tiny)
    with pytest.raises(Exception, match="register failed on purpose"):
        retrain(str(tiny), str(inbox))
    assert workspace_state(tiny) == before  # incl. artifacts/registered.json, which DVC had deleted
    assert (inbox / "n2/ir.png").is_file() and not (tiny / "incoming/n2").exists()
    assert [f.pair for f in read_catalogue(tiny)] == ["n1", "n1"]
    assert json.loads((tiny / "artifacts/registered.json").read_text())["version"] == "2"
    monkeypatch.delenv("TINY_FAIL")

    with FileLock(str(lock_path(tiny))):
        assert retrain(str(tiny), str(inbox))["status"] == "busy"
    assert (inbox / "n2").exists() and (inbox / "leak").exists()


@pytest.mark.slow
def test_failed_download_rolls_the_retrain_back(tiny, prefect_server, monkeypatch):
    """DVC deletes data/raw and data/weights before the download stage runs; when it fails, the
    retrain restores them (dvc checkout of the last dvc.lock), the catalogue and params too."""
    from flows.repro import run_pipeline
    from flows.retrain import retrain

    run_pipeline(str(tiny))
    inbox = tiny / "inbox"
    write_pair(inbox / "n1")
    before = workspace_state(tiny)
    assert {"data/raw/index.csv", "data/weights/README.txt", "dvc.lock"} <= set(before)
    monkeypatch.setenv("TINY_FAIL", "download")
    with pytest.raises(Exception, match="download failed on purpose"):
        retrain(str(tiny), str(inbox), download_retries=0)
    assert workspace_state(tiny) == before
    assert not (tiny / "incoming").exists() and (inbox / "n1/ir.png").is_file()
    assert pending_stages(tiny) == {}
    assert not list((tiny / ".dvc/tmp").glob("retrain-backup-*"))
