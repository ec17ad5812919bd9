"""Names the command line and the image readers need before any params are loaded: the project
root, the params file, the image size limit and the metric conventions. Kept apart from
``params.py`` so that ``coconet fuse`` does not import pydantic and build the params models
(0.1 s of each call); ``params.py`` re-exports them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MAX_PIXELS = 100_000_000  # images above this many pixels are refused from their header
PARAMS_FILE = PROJECT_ROOT / "params.yaml"


class Convention(StrEnum):
    """How the fusion metrics are computed (``pipeline/metrics/METRICS.md``): the IVIF MATLAB
    toolbox's arithmetic, or the CDDFuse Python evaluator's."""

    matlab = "matlab"
    cddfuse = "cddfuse"
