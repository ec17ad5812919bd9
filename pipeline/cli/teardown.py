"""Ending a one-shot command's process without Python's teardown.

Once torch is loaded, the interpreter's own teardown (clearing every module's namespace, freeing
what they hold, running C++ destructors) costs 0.15-0.3 s here, a tenth of a ``coconet fuse``
call, and none of it is work the user asked for. A command whose results are all written and
closed when it returns (``fuse``: each output is written to a temporary name, closed, then renamed)
calls :func:`skip_teardown`; the ``coconet`` executable (``pipeline.cli.console_script``) then
hands its exit status to :func:`end_process`, which runs the ``atexit`` handlers (logging's
flush, ``weakref.finalize`` callbacks such as temporary folders' removal), flushes stdout and
stderr and ends the process with that status. Where another non-daemon thread is still running,
it leaves the normal exit (which waits for that thread) to run instead. :func:`pipeline.cli.main`
itself never ends the process, so code that calls it keeps running.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading

_requested = threading.Event()


def skip_teardown() -> None:
    """Ask the entry point to end the process without Python's teardown when this command ends."""
    _requested.set()


def reset() -> None:
    """Forget an earlier request (each command line starts with the normal exit)."""
    _requested.clear()


def end_process(code: object) -> None:
    """End the process with exit status ``code`` (``SystemExit.code``) without Python's teardown,
    if a command asked for it and no other non-daemon thread is running; else return."""
    if not _requested.is_set() or _other_threads_running():
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # SystemExit("message"): printed to stderr, status 1, as the interpreter does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(status)


def _other_threads_running() -> bool:
    main = threading.main_thread()
    return any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())
