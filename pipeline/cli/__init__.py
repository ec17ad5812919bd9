"""The ``coconet`` command line: one subcommand per pipeline stage and per user task.

``stages.py`` and ``tools.py`` register their commands on :data:`app`; other installed packages
add theirs through the ``coconet.commands`` entry-point group (``flows`` adds run, retrain and
schedule), so this package never imports them.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer

# mirror, official, stages and tools register their commands on import; teardown ends the process
from pipeline.cli import mirror, official, stages, teardown, tools  # noqa: F401
from pipeline.cli.app import app, report_warnings
from pipeline.core.errors import EXPECTED_ERRORS

COMMANDS_GROUP = "coconet.commands"


def load_plugins() -> None:
    """Import every module registered under ``coconet.commands``; each adds its commands."""
    for entry in entry_points(group=COMMANDS_GROUP):
        entry.load()


load_plugins()


def main() -> None:
    """Entry point that turns expected user errors into one-line messages (raises SystemExit,
    as any click application does)."""
    report_warnings()
    teardown.reset()
    try:
        app()
    except EXPECTED_ERRORS as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


def console_script() -> None:
    """The ``coconet`` executable (and ``python -m pipeline.cli``): :func:`main`, then the process
    ends without Python's teardown where the command asked for it (:mod:`.teardown`)."""
    try:
        main()
    except SystemExit as done:
        teardown.end_process(done.code)
        raise


__all__ = ["app", "console_script", "main"]

if __name__ == "__main__":
    console_script()
