"""Links from the pipeline's records into the MLflow UI."""

from __future__ import annotations

from pipeline.tracking.ui_links import UI_URL_ENV, record_links, ui_base

TRAIN = {"run_id": "r1", "experiment_id": "7", "tracking_uri": "sqlite:////x/mlflow.db"}
ML = "workflowType=machine_learning"  # the UI's model-training layout
REGISTERED = {"name": "coconet", "version": "3", "tracking_uri": "sqlite:////x/mlflow.db"}


def test_embedded_store_links_to_the_local_ui(monkeypatch):
    monkeypatch.delenv(UI_URL_ENV, raising=False)
    links = record_links(TRAIN, {"run_id": "e1"}, REGISTERED)
    assert links == {
        "experiment": "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning",
        "training run": f"http://127.0.0.1:5000/#/experiments/7/runs/r1?{ML}",
        "evaluation run": f"http://127.0.0.1:5000/#/experiments/7/runs/e1?{ML}",
        "model version": f"http://127.0.0.1:5000/#/models/coconet/versions/3?{ML}",
    }


def test_a_tracking_server_serves_its_own_ui(monkeypatch):
    monkeypatch.delenv(UI_URL_ENV, raising=False)
    assert ui_base("http://mlflow.lab:5000/") == "http://mlflow.lab:5000"
    monkeypatch.setenv(UI_URL_ENV, "https://ui.example.org/mlflow/")
    assert ui_base("http://mlflow.lab:5000") == "https://ui.example.org/mlflow"


def test_missing_records_give_fewer_links(monkeypatch):
    monkeypatch.delenv(UI_URL_ENV, raising=False)
    assert record_links(None, None, None) == {}
    only_version = record_links(None, None, {**REGISTERED, "name": "a b"})
    assert only_version == {
        "model version": f"http://127.0.0.1:5000/#/models/a%20b/versions/3?{ML}"
    }
