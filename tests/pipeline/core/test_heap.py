"""The fusion processes' heap: freed blocks up to 32 MiB stay in the process for reuse, larger
ones go back to the system (a large image's tiles keep to their memory budget)."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from pipeline.core.heap import _glibc, imports_without_collection, thread_heap_hint

# Allocate and touch 256 MiB as 8 MiB blocks or as one block, free it, and print how much of it
# the process still holds (MiB).
PROBE = """
import sys
import numpy as np
import psutil
from pipeline.core.heap import keep_freed_memory
mode, size = sys.argv[1], int(sys.argv[2])
if mode == "keep":
    assert keep_freed_memory()
process = psutil.Process()
before = process.memory_info().rss
blocks = [np.ones(size * 2**20, dtype=np.uint8) for _ in range(256 // size)]
del blocks
print((process.memory_info().rss - before) / 2**20)
"""


def _held_after_free(mode: str, block_mib: int) -> float:
    command = [sys.executable, "-c", PROBE, mode, str(block_mib)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt")
def test_freed_blocks_up_to_32_mib_stay_in_the_process_for_reuse():
    assert _held_after_free("default", 8) < 64  # glibc's default hands them back
    assert _held_after_free("keep", 8) > 192  # kept: the next layer's maps reuse them


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt")
def test_larger_blocks_still_go_back_to_the_system():
    assert _held_after_free("keep", 256) < 64


def test_imports_run_without_collection_and_stay_out_of_later_ones():
    assert gc.isenabled() and gc.get_freeze_count() == 0  # conftest unfreezes after each test
    with imports_without_collection():
        assert not gc.isenabled()
        module = {"weights": [1.0, 2.0]}  # stands for what an import creates
    assert gc.is_tracked(module) and gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert not any(tracked is module for tracked in gc.get_objects())  # frozen: never scanned


@pytest.mark.skipif(not _glibc(), reason="glibc's arenas")
def test_a_server_without_one_shared_heap_is_told_how_to_start(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert "start the server with MALLOC_ARENA_MAX=1" in thread_heap_hint()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    assert thread_heap_hint() is None
