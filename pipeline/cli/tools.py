"""``coconet`` commands for users' own images and models: fuse, model, metrics, lineage.

Each command checks its arguments and inputs before importing anything heavy (torch, mlflow),
so a mistake is reported at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import teardown
from pipeline.cli.app import (
    Bits,
    ImageFormat,
    MaxPixelsOption,
    ParamsOption,
    PrecisionOption,
    RootOption,
    app,
    fail,
)
from pipeline.core.defaults import DEFAULT_MAX_PIXELS, PARAMS_FILE, PROJECT_ROOT, Convention
from pipeline.core.errors import CoconetError
from pipeline.core.heap import imports_without_collection, keep_freed_memory
from pipeline.core.placement import Device, PlacementError, Precision, parse_memory, place

IrDirOption = Annotated[Path | None, typer.Option("--ir-dir", help="Folder of infrared images.")]
VisDirOption = Annotated[
    Path | None, typer.Option("--vis-dir", help="Folder of visible images (same names).")
]


@app.command()
def metrics(
    ir: Annotated[Path | None, typer.Option("--ir", help="Infrared source image.")] = None,
    vis: Annotated[Path | None, typer.Option("--vis", help="Visible source image.")] = None,
    fused: Annotated[Path | None, typer.Option("--fused", help="Fused image to score.")] = None,
    ir_dir: IrDirOption = None,
    vis_dir: VisDirOption = None,
    fused_dir: Annotated[
        Path | None, typer.Option("--fused-dir", help="Folder of fused images (same names).")
    ] = None,
    convention: Annotated[
        Convention,
        typer.Option(
            "--convention",
            help="matlab (the IVIF MATLAB toolbox) or cddfuse (the CDDFuse Python evaluator).",
        ),
    ] = Convention.matlab,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (NaN -> null).")] = False,
    max_pixels: MaxPixelsOption = DEFAULT_MAX_PIXELS,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write per-image rows and the mean here.")
    ] = None,
) -> None:
    """Score fused images: EN SD SF AG MI SCD CC VIF Qabf Nabf SSIM PSNR.

    Give one triple (--ir --vis --fused) or three folders (--ir-dir --vis-dir --fused-dir)
    whose images pair up by file name (natural order: 2 before 10); folders print one row per
    image and the mean. Each metric's formula and reference: pipeline/metrics/METRICS.md.
    """
    single = (ir, vis, fused)
    folders = (ir_dir, vis_dir, fused_dir)
    if any(single) and any(folders):
        fail("give either --ir/--vis/--fused or --ir-dir/--vis-dir/--fused-dir, not both", 2)
    is_single = any(single) or not any(folders)
    if is_single and not all(single):
        fail("give all three of --ir, --vis and --fused (or the three --*-dir folders)", 2)
    if not is_single and not all(folders):
        fail("give all three of --ir-dir, --vis-dir and --fused-dir", 2)
    from pipeline.core.imageio import ImageError
    from pipeline.evaluation import scoring as report

    try:
        if is_single:
            scored = [report.score_files(ir, vis, fused, convention, max_pixels=max_pixels)]
        else:
            scored = report.score_folders(ir_dir, vis_dir, fused_dir, convention, max_pixels)
    except ImageError as exc:
        fail(str(exc))
    if csv_out is not None:
        try:
            report.write_csv(csv_out, scored)
        except OSError as exc:
            fail(f"{csv_out}: cannot write ({exc.strerror or exc})")
    if as_json:
        typer.echo(json.dumps(report.to_json_dict(scored, convention, is_single), indent=2))
    else:
        report.print_table(report.render_table(scored, convention, is_single))
        if csv_out is not None:
            typer.echo(f"wrote {csv_out}")


@app.command()
def fuse(
    ir: Annotated[Path | None, typer.Option("--ir", help="Infrared image.")] = None,
    vis: Annotated[
        Path | None, typer.Option("--vis", help="Visible image (grey or colour).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output file (one pair) or folder (--*-dir)."),
    ] = None,
    ir_dir: IrDirOption = None,
    vis_dir: VisDirOption = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Checkpoint file (artifacts/model.pt or a training checkpoint), MLflow URI "
            "(models:/coconet@champion, runs:/<run_id>/model) or 'official' (the authors' "
            "trained model: downloaded once, verified, converted and cached).",
        ),
    ] = "artifacts/model.pt",
    device: Annotated[
        Device, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")
    ] = Device.auto,
    resize: Annotated[
        bool, typer.Option("--resize", help="Resize the infrared image to the visible size.")
    ] = False,
    bits: Annotated[Bits, typer.Option("--bits", help="Output bit depth.")] = Bits.eight,
    ext: Annotated[
        ImageFormat, typer.Option("--ext", help="Output format in folder mode.")
    ] = ImageFormat.png,
    max_pixels: MaxPixelsOption = DEFAULT_MAX_PIXELS,
    precision: PrecisionOption = Precision.auto,
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory",
            help="Memory budget, e.g. 3GB; a larger pair is fused in tiles (exact: the attention "
            "is shared). Default: half the free RAM (80% of free GPU memory).",
        ),
    ] = None,
) -> None:
    """Fuse an infrared/visible pair (--ir --vis -o OUT) or two folders (--ir-dir --vis-dir -o DIR).

    Folder pairs match by file name. A colour visible image gives a colour result (fused in
    YCbCr). Inputs may be 8- or 16-bit PNG/BMP/JPG/TIFF. The inputs, the output location and
    the model file are checked before the model is loaded and nothing overwrites an input;
    each output file is written atomically.
    """
    single, folders = (ir, vis), (ir_dir, vis_dir)
    if any(single) and any(folders):
        fail("give either --ir/--vis or --ir-dir/--vis-dir, not both", 2)
    if not all(single) and not all(folders):
        fail("give --ir and --vis (one pair) or --ir-dir and --vis-dir (folders)", 2)
    if output is None:
        fail("give the output with -o (a file for one pair, a folder for --ir-dir/--vis-dir)", 2)
    depth = int(bits)
    if max_memory is not None:
        try:
            parse_memory(max_memory)
        except PlacementError as exc:
            fail(f"--max-memory: {exc}", 2)

    from pipeline import fusion_plan
    from pipeline.core.imageio import write_image

    try:
        if all(single):
            fusion_plan.check_not_input(output, (ir, vis))
            fusion_plan.check_output_location(output)
            vis_image, ir_image = fusion_plan.read_pair(vis, ir, resize, max_pixels)
            fusion_plan.check_output(output, vis_image.ndim == 3, depth)
        else:
            plan = fusion_plan.plan_directory(
                vis_dir, ir_dir, output, f".{ext}", resize, depth, max_pixels
            )
        fusion_plan.check_model_source(model)
    except CoconetError as exc:
        fail(str(exc))

    with imports_without_collection():  # torch: 0.3 s less
        from pipeline.fusion import fuse_arrays
        from pipeline.inference import fuse_directory, load_fusion_model
    teardown.skip_teardown()  # outputs are closed when fuse returns: 0.15-0.3 s less at the end

    keep_freed_memory()
    try:
        placement = place(device, precision, max_memory)
        net = load_fusion_model(model, placement)
        how = f"on {placement.describe()} (--precision {precision})"
        if all(single):
            write_image(output, fuse_arrays(net, vis_image, ir_image, placement), bits=depth)
            typer.echo(f"wrote {output}: fused {how}")
        else:
            from rich.progress import track

            def progress(items):
                return track(items, description="fusing", total=len(plan), transient=True)

            fuse_directory(net, plan, placement, resize, depth, progress, max_pixels)
            typer.echo(f"wrote {len(plan)} fused images to {output}: fused {how}")
    except CoconetError as exc:
        fail(str(exc))


@app.command("model")
def model_summary(
    vgg_weights: Annotated[
        str | None,
        typer.Option(
            "--vgg-weights",
            help="imagenet, random or a .pth file (default: model.vgg_weights in params.yaml).",
        ),
    ] = None,
    size: Annotated[
        str, typer.Option("--size", help="Input size WxH for the MAC count.")
    ] = "640x480",
    params_file: ParamsOption = PARAMS_FILE,
) -> None:
    """Print CoCoNet's architecture summary: parameters (trainable, frozen) and MACs at --size."""
    try:
        width, height = (int(v) for v in size.lower().split("x"))
        if width < 1 or height < 1:
            raise ValueError
    except ValueError:
        fail(f"--size must look like 640x480, not {size!r}", 2)
    from pipeline.core.params import load_params

    weights = vgg_weights or load_params(params_file).model.vgg_weights

    from rich.console import Console
    from rich.table import Table

    from models.coconet import CoCoNet
    from models.summary import summary
    from models.vgg import VGGWeightsError

    try:
        net = CoCoNet(vgg_weights=weights)
    except VGGWeightsError as exc:
        fail(str(exc))
    info = summary(net, width, height)
    table = Table(title=f"CoCoNet (VGG-19 weights: {weights})")
    for column in ("part", "trainable", "frozen"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for name, trainable, frozen in info["parts"]:
        table.add_row(name, f"{trainable:,}", f"{frozen:,}")
    table.add_row("total", f"{info['trainable']:,}", f"{info['frozen']:,}", style="bold")
    console = Console()
    console.print(table)
    console.print(f"trainable parameters: {info['trainable']:,}")
    console.print(f"frozen parameters (VGG-19): {info['frozen']:,}")
    console.print(f"MACs at {width}x{height}: {info['macs'] / 1e9:.2f} G ({info['macs']:,})")


@app.command()
def lineage(
    target: Annotated[
        str, typer.Argument(help="Model URI (models:/name@alias, models:/name/N) or run id.")
    ] = "models:/coconet@champion",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: everything, every pair included.")
    ] = False,
    pairs: Annotated[
        bool,
        typer.Option(
            "--pairs",
            help="After the summary, list every pair's URLs and sha256s, the run's params and "
            "metrics and the full dvc.lock md5s.",
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Re-hash the local data and outputs; exit 1 on any drift."),
    ] = False,
    root: RootOption = None,
) -> None:
    """Show a model's lineage: version and aliases, MLflow run, dvc.lock hashes, datasets.

    Prints a one-screen summary (model, run, git commit, params digest, dvc.lock hashes per
    stage, VGG weights, pairs per dataset and split with their mask methods, evaluation means);
    --pairs adds the per-pair detail. Read from what register recorded in MLflow, so it
    survives deleted local data. --verify re-hashes the bytes of each recorded path as DVC does
    (md5, .dir for folders; never DVC's mtime-keyed cache) and the params digest, and reports
    drift. Refuses, creating nothing, when the MLflow store does not exist.
    """
    from pipeline.tracking.lineage import audit

    try:
        text, drift = audit(target, as_json, verify, (root or PROJECT_ROOT).resolve(), pairs=pairs)
    except CoconetError as exc:  # no store, another copy's store, no such model or run
        fail(str(exc))
    typer.echo(text)
    if drift:
        fail("local files differ from the recorded lineage (see verify above)")
