"""Process defaults for the flow commands: telemetry off unless the user decided otherwise."""

from __future__ import annotations

import os

TELEMETRY_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # a server started from here sends nothing
    "DO_NOT_TRACK": "1",  # Prefect client-side SDK analytics
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def telemetry_off() -> None:
    """Set each telemetry switch to off where the environment does not set it already."""
    for key, value in TELEMETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)
