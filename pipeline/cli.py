"""The ``coconet`` command line: one subcommand per user task and per pipeline stage.

Heavy modules (torch, mlflow, prefect) are imported inside each command so that
``coconet --help`` stays fast and one broken optional dependency breaks only its command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.imageio import ImageError
from pipeline.params import ParamsError

app = typer.Typer(
    help="CoCoNet infrared/visible image fusion: pipeline stages, fusion, metrics, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
RootOption = Annotated[
    Path | None, typer.Option("--root", help="Project root for data and outputs.")
]


def fail(message: str, code: int = 1) -> None:
    """Print an error to stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def main() -> None:
    """Entry point that turns expected user errors into one-line messages."""
    try:
        app()
    except (ImageError, ParamsError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


# The commands live in three modules that register themselves on ``app`` when imported.
from flows import cli as _flow_commands  # noqa: E402, F401
from pipeline import cli_stages as _stage_commands  # noqa: E402, F401
from pipeline import cli_tools as _tool_commands  # noqa: E402, F401

if __name__ == "__main__":
    main()
