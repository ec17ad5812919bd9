"""The typer application every ``coconet`` command registers on, and its shared options.

Heavy modules (torch, mlflow, prefect) are imported inside each command so that
``coconet --help`` stays fast and one broken optional dependency breaks only its command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

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


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error to stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
