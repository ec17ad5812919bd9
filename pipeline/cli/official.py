"""``coconet import-official``: convert a checkpoint of the authors' code into this project's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, fail


@app.command("import-official")
def import_official(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint in the official format (.pth).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Converted checkpoint (.pt).")],
    vgg_weights: Annotated[
        str,
        typer.Option(
            "--vgg-weights",
            help="Where the VGG-19 layers the official file lacks (conv4_1..conv5_4, used only "
            "by the contrastive loss) come from: imagenet, random or a path.",
        ),
    ] = "random",
    force: Annotated[
        bool, typer.Option("--force", help="Replace OUTPUT if it exists (never the input).")
    ] = False,
) -> None:
    """Convert an official CoCoNet checkpoint ({'meta', 'state_dict'}) for fuse, evaluate and
    fine-tuning. Loaded with weights_only=True; every tensor the official forward pass uses must
    map to exactly one of ours (se_32 and att_deconv9, built but never used, are skipped)."""
    if not checkpoint.is_file():
        fail(f"{checkpoint}: no such file")
    if output.exists() and output.is_dir():
        fail(f"{output}: is a directory; give a file name such as {output / 'official.pt'}")
    if output.exists() and output.resolve() == checkpoint.resolve():
        fail(f"{output}: is the checkpoint being converted; give another output file", 2)
    if output.exists() and not force:
        fail(f"{output}: exists; pass --force to replace it", 2)
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        fail(f"{output}: cannot be created, {parent} is a file, not a folder", 2)
    from models.official import save_converted

    report = save_converted(checkpoint, output, vgg_weights=vgg_weights)
    unused = ", ".join(sorted({key.split(".")[0] for key in report.skipped}))
    typer.echo(
        f"{output}: {report.converted} tensors from {checkpoint}; skipped the unused official "
        f"modules {unused}; VGG from the file: {', '.join(report.vgg_from_file)}; "
        f"from {vgg_weights}: {', '.join(report.vgg_not_set) or 'none'}"
    )
