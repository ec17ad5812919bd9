"""Links into the MLflow UI for the records a pipeline run leaves behind.

The UI's address: ``COCONET_MLFLOW_UI_URL`` when set; else the tracking URI itself when it is
an ``http(s)`` tracking server (the server serves the UI); else ``http://127.0.0.1:5000``, where
``mlflow ui --backend-store-uri sqlite:///mlflow.db`` serves the embedded store. Every link
asks for the UI's model-training layout (``workflowType=machine_learning``; a fresh browser
opens MLflow 3's GenAI layout otherwise).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

UI_URL_ENV = "COCONET_MLFLOW_UI_URL"
LOCAL_UI = "http://127.0.0.1:5000"
ML_LAYOUT = "workflowType=machine_learning"


def ui_base(tracking_uri: str) -> str:
    """The MLflow UI's base URL for ``tracking_uri`` (see the module docstring)."""
    if os.environ.get(UI_URL_ENV):
        return os.environ[UI_URL_ENV].rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_UI


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}?{ML_LAYOUT}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{ML_LAYOUT}"


def version_url(base: str, name: str, version: str | int) -> str:
    return f"{base}/#/models/{quote(name, safe='')}/versions/{version}?{ML_LAYOUT}"


def record_links(
    train: dict[str, Any] | None,
    evaluation: dict[str, Any] | None,
    registered: dict[str, Any] | None,
) -> dict[str, str]:
    """``{label: url}`` for what the records name: ``train`` is ``artifacts/train_run.json``,
    ``evaluation`` ``reports/evaluation_run.json``, ``registered`` ``artifacts/registered.json``
    (each may be missing). The evaluation run lives in the training run's experiment."""
    links: dict[str, str] = {}
    uri = (registered or {}).get("tracking_uri") or (train or {}).get("tracking_uri") or ""
    base = ui_base(uri)
    experiment = (train or {}).get("experiment_id")
    if experiment:
        links["experiment"] = experiment_url(base, experiment)
        links["training run"] = run_url(base, experiment, train["run_id"])
        if evaluation and evaluation.get("run_id"):
            links["evaluation run"] = run_url(base, experiment, evaluation["run_id"])
    if registered and registered.get("version"):
        links["model version"] = version_url(base, registered["name"], registered["version"])
    return links
