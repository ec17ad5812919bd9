"""``models:/<name>@<alias>`` and ``models:/<name>/<version>`` from an MLflow tracking server over
its REST API with the standard library: no MLflow import (about 2 s) for a read.

The same requests MLflow's client makes: the stale-run check of
:func:`pipeline.tracking.store_health.mark_stale_runs` (search experiments, then this project's
RUNNING runs on this host), the alias or version, the version's download URI, then the three
files the loader reads (``MLmodel``, ``config.json``, ``model.safetensors``) through the server's
artifact proxy (``mlflow-artifacts:/``) or from a local ``file:`` folder. :func:`fetch_model`
returns None, and the caller goes through MLflow, where this read is not MLflow's answer:
credentials or TLS settings in the environment, a store that is not ``http(s)://``, an answer
that is not found, not READY, paged or not as expected, another artifact store, or a stale run
to mark (MLflow's path marks it).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.params import PROJECT_ROOT
from pipeline.tracking import names
from pipeline.tracking.model_folder import CONFIG_FILE, WEIGHTS_FILE
from pipeline.tracking.run_owner import is_stale, owned_running_filter, owner_tags
from pipeline.tracking.sqlite_registry import MODEL_URI
from pipeline.tracking.store_file import local_path, resolve_tracking_uri, tracking_params

CLIENT_SETTINGS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
CLIENT_SETTINGS += ("MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH")
CLIENT_SETTINGS += ("MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_TRACKING_AUTH")
TIMEOUT_S = 60
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts/"


class _NotHere(Exception):
    """The server's answer is not one this read handles: MLflow's client takes over."""


def _call(server: str, path: str, query: dict[str, str] | None = None, body: Any = None) -> Any:
    url = f"{server}/api/2.0/mlflow/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _NotHere(str(exc)) from exc


def _has_stale_runs(server: str, root: Path) -> bool:
    found = _call(server, "experiments/search", body={"max_results": 1000})
    if found.get("next_page_token"):
        raise _NotHere("more experiments than one page")
    experiments = [e["experiment_id"] for e in found.get("experiments", [])]
    if not experiments:
        return False
    owner = owner_tags(root)
    body = {
        "experiment_ids": experiments,
        "filter": owned_running_filter(owner),
        "max_results": 1000,
    }
    for run in _call(server, "runs/search", body=body).get("runs", []):
        tags = {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}
        if is_stale(tags.get(names.OWNER_PID, ""), owner):
            return True
    return False


def _fetch(server: str, artifact_uri: str, relative: str, target: Path) -> None:
    """Copy one file of the model folder at ``artifact_uri`` into ``target``."""
    if artifact_uri.startswith("mlflow-artifacts:"):
        path = urllib.parse.urlparse(artifact_uri).path.lstrip("/")
        url = server + ARTIFACTS_API + urllib.parse.quote(f"{path}/{relative}")
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(response.read())
        except (urllib.error.URLError, OSError) as exc:
            raise _NotHere(str(exc)) from exc
        return
    folder = local_path(artifact_uri, Path.cwd()) if artifact_uri.startswith("file:") else None
    if folder is None or not (folder / relative).is_file():
        raise _NotHere(f"{artifact_uri}: not an artifact store this read handles")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((folder / relative).read_bytes())


def fetch_model(uri: str, destination: Path, root: Path = PROJECT_ROOT) -> Path | None:
    """The model folder ``uri`` names on the project's tracking server, fetched into
    ``destination``; None where only MLflow's client can answer (see the module docstring)."""
    match = MODEL_URI.fullmatch(uri)
    root = root.resolve()
    server = resolve_tracking_uri(tracking_params(root).uri, root).rstrip("/")
    if match is None or not server.startswith(("http://", "https://")):
        return None
    if any(os.environ.get(setting) for setting in CLIENT_SETTINGS):
        return None
    try:
        if _has_stale_runs(server, root):
            return None
        name, version = match["name"], match["version"]
        if match["alias"] is not None:
            query = {"name": name, "alias": match["alias"]}
            found = _call(server, "registered-models/alias", query).get("model_version", {})
        else:
            query = {"name": name, "version": version}
            found = _call(server, "model-versions/get", query).get("model_version", {})
        if found.get("status") != "READY" or "version" not in found:
            return None
        query = {"name": name, "version": str(found["version"])}
        artifact_uri = _call(server, "model-versions/get-download-uri", query)["artifact_uri"]
        _fetch(server, artifact_uri, "MLmodel", destination / "MLmodel")
        spec = yaml.safe_load((destination / "MLmodel").read_text())
        data = str(spec["flavors"]["python_function"]["data"])
        for relative in (f"{data}/{CONFIG_FILE}", f"{data}/{WEIGHTS_FILE}"):
            target = (destination / relative).resolve()
            if not target.is_relative_to(destination.resolve()):
                return None  # the loader refuses such a folder: let MLflow's path say so
            _fetch(server, artifact_uri, relative, target)
    except (_NotHere, KeyError, TypeError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return destination
