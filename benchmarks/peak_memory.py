"""Peak resident memory of this process, for the benchmarks that report memory."""

from __future__ import annotations

import contextlib
import re
import resource
from pathlib import Path


def rss_high_water_kib(reset: bool = False) -> int:
    """The resident set's high-water mark (KiB); ``reset`` first lowers it to the current RSS."""
    status = Path("/proc/self/status")
    if reset:
        with contextlib.suppress(OSError):  # not allowed everywhere: then no reset
            Path("/proc/self/clear_refs").write_text("5")
    if status.is_file():
        match = re.search(r"VmHWM:\s+(\d+)", status.read_text())
        if match:
            return int(match.group(1))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
