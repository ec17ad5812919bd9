"""The typer application every ``coconet`` command registers on, and its shared options.

Heavy modules (torch, mlflow, prefect) are imported inside each command so that
``coconet --help`` stays fast and one broken optional dependency breaks only its command.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from pipeline.core.placement import Device, Precision

app = typer.Typer(
    help="CoCoNet infrared/visible image fusion: pipeline stages, fusion, metrics, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click errors: one "Error: ..." line a script can read
)


class Bits(StrEnum):
    """Output bit depth."""

    eight = "8"
    sixteen = "16"


class ImageFormat(StrEnum):
    """Output format of the fused images in folder mode."""

    png = "png"
    tif = "tif"
    tiff = "tiff"
    bmp = "bmp"
    jpg = "jpg"


def _show_version(asked: bool) -> None:
    if asked:
        try:
            typer.echo(f"coconet {version('coconet')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("coconet (not installed: run `uv sync`)")
        raise typer.Exit()


@app.callback()
def _global_options(
    show: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    """CoCoNet infrared/visible image fusion: pipeline stages, fusion, metrics, registry."""


MaxPixelsOption = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse images above this many pixels (width x height), checked from the file's "
        "header before decoding.",
    ),
]
ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
RootOption = Annotated[
    Path | None, typer.Option("--root", help="Project root for data and outputs.")
]
DeviceOption = Annotated[
    Device | None,
    typer.Option(
        "--device",
        help="Where to run: auto (CUDA when present), cpu or cuda. Default: the stage's "
        "device param.",
    ),
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="auto (bf16 on CUDA or a CPU with native bf16, else fp32), fp32 or bf16.",
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error to stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


class WarningLines(logging.Handler):
    """Prints each distinct warning once, as one ``warning: ...`` line on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.seen:
            self.seen.add(message)
            typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def report_warnings(logger: str = "pipeline") -> None:
    """Show the project's logged warnings (e.g. an ignored alpha channel) as ``warning:`` lines."""
    target = logging.getLogger(logger)
    if not any(isinstance(h, WarningLines) for h in target.handlers):
        target.addHandler(WarningLines())
        target.propagate = False
