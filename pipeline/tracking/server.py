"""A remote tracking server, checked before any work: MLflow's own client retries a server that
does not answer for minutes, and a stage would only fail after it had started its work.

:func:`check_server` asks ``GET <uri>/health`` once, with a short timeout
(``COCONET_MLFLOW_CONNECT_TIMEOUT`` seconds, default 10), and turns any failure into one line.
"""

from __future__ import annotations

import os

import requests

from pipeline.tracking.store_file import StoreError

TIMEOUT_ENV = "COCONET_MLFLOW_CONNECT_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0


def is_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (http or https)."""
    return uri.startswith(("http://", "https://"))


def check_server(uri: str) -> None:
    """Raise :class:`StoreError` unless the tracking server at ``uri`` answers its health check."""
    timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    try:
        answer = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise StoreError(
            f"MLflow tracking server {uri} does not answer ({reason} within {timeout:g} s): "
            "start it (scripts/team_services.sh start) or unset MLFLOW_TRACKING_URI to use the "
            "embedded store; nothing was done"
        ) from None
    if answer.status_code != 200:
        raise StoreError(
            f"MLflow tracking server {uri}: /health answered HTTP {answer.status_code}; "
            "nothing was done"
        )
