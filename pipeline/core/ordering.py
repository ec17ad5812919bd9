"""Natural order: names with embedded numbers sort by number (pair 8 before pair 10)."""

from __future__ import annotations

import re


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically: ``tno40/8`` before ``tno40/10``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))
