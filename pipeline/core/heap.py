"""A fusion process's memory: malloc keeps freed maps for the next layer, and Python's cycle
collector stays out of torch's import and the exit.

A forward pass allocates and frees maps of a few to tens of MB at every layer, and again for every
image. glibc's malloc serves blocks over a sliding threshold (128 KiB at start) with fresh
``mmap`` calls, returns them with ``munmap`` and trims the heap's free top, so the kernel zeroes
and maps those pages again and again. :func:`keep_freed_memory` fixes the threshold at glibc's own
ceiling (32 MiB) and never trims: blocks up to 32 MiB are reused, larger ones still go back at
once. The network on a 640x480 pair then takes 12% less time on a 2-core CPU (README "Speed").
With no threshold at all it took 20% less, but a 4000x3000 pair fused in tiles then held up to
2.6 GB beyond its ``--max-memory`` budget: the bound keeps the tiled peaks where they were
(benchmarks/bench_fuse_memory.py). Called by the processes that fuse (``coconet fuse``, the
evaluate stage, the served model); training gained nothing (its patches are small) and is left.
This holds for the main thread's heap. glibc gives other threads heaps of their own, which kept
only part of what was freed here; a process can share one heap among all threads only from its
start (``MALLOC_ARENA_MAX=1``, read before any thread exists), which is why the README starts the
model server with it (MLflow fuses each request on a worker thread).
:func:`imports_without_collection` is for one-shot commands (``coconet fuse``).
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>: free heap top kept up to this many bytes
M_MMAP_THRESHOLD = -3  # glibc <malloc.h>: blocks at least this large come from mmap
MMAP_FROM = 32 * 2**20  # glibc's own ceiling for its sliding threshold (64-bit)
KEEP_TOP = 2**31 - 1  # mallopt takes an int: never trim


def keep_freed_memory() -> bool:
    """Keep freed blocks in this process for reuse (glibc only); True where it applied.

    Elsewhere (macOS, Windows, musl) it does nothing and returns False: their allocators keep
    their own defaults.
    """
    if not _glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_FROM)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_TOP))


def thread_heap_hint() -> str | None:
    """Why a server that fuses on worker threads runs slower here, and the fix; None where every
    thread already shares one heap (``MALLOC_ARENA_MAX=1``) or the C library is not glibc."""
    if not _glibc() or os.environ.get("MALLOC_ARENA_MAX") == "1":
        return None
    return (
        "MALLOC_ARENA_MAX is not 1: requests fused on the server's worker threads take about "
        "1.2-1.3x the network's time instead of 1.0-1.1x (glibc gives each thread a heap that "
        'does not keep freed maps); start the server with MALLOC_ARENA_MAX=1 (README "Serving '
        'the registered model")'
    )


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr, or a name this system lacks
        return False


@contextmanager
def imports_without_collection() -> Iterator[None]:
    """No cycle collection while the body imports, then every live object frozen (``gc.freeze``):
    the collector otherwise runs dozens of times while torch's modules load, scanning everything
    loaded so far, and once more over all of it when the interpreter exits. For a command that
    imports torch and then exits (``coconet fuse``): ``import torch`` 0.3 s faster (1.25 s against
    1.54 s, mean of 4) and the exit 0.6-0.9 s faster here. Frozen objects are still freed by
    reference counting, but cycles among them are never collected: for one-shot processes only.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
