"""Where the public data mirror keeps things the tests read directly."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.params import PROJECT_ROOT

TNO_COMMIT = "5f287300dce7cbc90b9e08e6872455af6baa279f"
TNO_DIR = (
    f"raw.githubusercontent.com/Zhaozixiang1228/IVIF-DIDFuse/{TNO_COMMIT}/Datasets/Test_data_TNO"
)


def mirror_dir() -> Path | None:
    """The offline data mirror (``$COCONET_MIRROR`` or ``../shared/mirror``), if present."""
    path = Path(os.environ.get("COCONET_MIRROR") or PROJECT_ROOT.parent / "shared" / "mirror")
    return path if path.is_dir() else None
