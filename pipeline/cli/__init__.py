"""The ``coconet`` command line: one subcommand per pipeline stage and per user task.

``stages.py`` and ``tools.py`` register their commands on :data:`app`; other installed packages
add theirs through the ``coconet.commands`` entry-point group (``flows`` adds run, retrain and
schedule), so this package never imports them.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer

from pipeline.cli import mirror, official, stages, tools  # noqa: F401  (register commands)
from pipeline.cli.app import app, report_warnings
from pipeline.core.errors import EXPECTED_ERRORS

COMMANDS_GROUP = "coconet.commands"


def load_plugins() -> None:
    """Import every module registered under ``coconet.commands``; each adds its commands."""
    for entry in entry_points(group=COMMANDS_GROUP):
        entry.load()


load_plugins()


def main() -> None:
    """Entry point that turns expected user errors into one-line messages."""
    report_warnings()
    try:
        app()
    except EXPECTED_ERRORS as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
