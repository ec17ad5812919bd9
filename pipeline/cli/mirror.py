"""``coconet mirror build DIR``: a verified copy of the catalogued public files for offline use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.app import ParamsOption, app
from pipeline.core.defaults import PARAMS_FILE

if TYPE_CHECKING:
    from pipeline.core.params import DownloadParams

mirror_app = typer.Typer(
    help="Mirrors of the public data: a folder laid out as HOST/PATH of each file's URL, what "
    "COCONET_MIRROR (or download.mirror) points the download stage at without internet.",
    no_args_is_help=True,
)
app.add_typer(mirror_app, name="mirror")


def params_weights(p: DownloadParams) -> list[tuple[str, str]]:
    """The weight files the download section of the params asks for."""
    selected = []
    if p.vgg19 != "none":
        selected.append(("vgg19", p.vgg19))
    if p.sam != "none":
        selected.append(("sam", p.sam))
    if p.official != "none":
        selected.append(("coconet", "official"))
    return selected


def _parse_weight(spec: str) -> tuple[str, str]:
    family, sep, variant = spec.partition(":")
    if not sep or not family or not variant:
        raise typer.BadParameter(f"{spec!r}: expected FAMILY:VARIANT, e.g. sam:vit_b")
    return family, variant


@mirror_app.command("build")
def build(
    folder: Annotated[Path, typer.Argument(help="The mirror folder (created if missing).")],
    datasets: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            help="A catalogued dataset or published set (repeatable). Default: all of both.",
        ),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            "--weights",
            help="A weight file FAMILY:VARIANT, e.g. vgg19:imagenet, sam:vit_b, "
            "coconet:official (repeatable). Default: those the params' download section names.",
        ),
    ] = None,
    no_weights: Annotated[bool, typer.Option("--no-weights", help="Datasets only.")] = False,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Copy from this mirror (base URL or folder) instead of the public URLs.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel fetches.")] = 8,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries per file.")] = 3,
    params_file: ParamsOption = PARAMS_FILE,
) -> None:
    """Fetch the catalogued files into FOLDER/HOST/PATH, each verified against its checksum,
    and write FOLDER/MANIFEST.tsv (url, sha256, bytes) last. Files already there and intact
    are kept; a file that fails verification is not kept."""
    from pipeline.catalogue.mirror import (
        build_mirror,
        mirrorable_sets,
        set_requests,
        weight_requests,
    )
    from pipeline.core.params import load_params

    requests = set_requests(datasets or mirrorable_sets())
    if not no_weights:
        chosen = [_parse_weight(w) for w in weights] if weights else None
        chosen = chosen or params_weights(load_params(params_file).download)
        requests += weight_requests(chosen)
    manifest = build_mirror(folder, requests, source, workers=workers, retries=retries)
    typer.echo(f"{folder}: {len(requests)} files verified; manifest {manifest}")
    typer.echo(f"use it with: COCONET_MIRROR={folder.resolve()} uv run dvc repro")
