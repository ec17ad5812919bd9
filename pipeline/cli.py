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
from pipeline.params import PARAMS_FILE, ParamsError

app = typer.Typer(
    help="CoCoNet infrared/visible image fusion: pipeline stages, fusion, metrics, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]


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


# --- commands are added below, one section per module ------------------------------------

_ = PARAMS_FILE  # default for ParamsOption in the sections below


# --- metrics (pipeline/metrics.py, pipeline/metrics_report.py) ----------------------------


@app.command()
def metrics(
    ir: Annotated[Path | None, typer.Option("--ir", help="Infrared source image.")] = None,
    vis: Annotated[Path | None, typer.Option("--vis", help="Visible source image.")] = None,
    fused: Annotated[Path | None, typer.Option("--fused", help="Fused image to score.")] = None,
    ir_dir: Annotated[
        Path | None, typer.Option("--ir-dir", help="Folder of infrared images.")
    ] = None,
    vis_dir: Annotated[
        Path | None, typer.Option("--vis-dir", help="Folder of visible images (same names).")
    ] = None,
    fused_dir: Annotated[
        Path | None, typer.Option("--fused-dir", help="Folder of fused images (same names).")
    ] = None,
    convention: Annotated[
        str,
        typer.Option(
            "--convention",
            help="matlab (the IVIF MATLAB toolbox) or cddfuse (the CDDFuse Python evaluator).",
        ),
    ] = "matlab",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (NaN -> null).")] = False,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write per-image rows and the mean here.")
    ] = None,
) -> None:
    """Score fused images: EN SD SF AG MI SCD CC VIF Qabf Nabf SSIM PSNR.

    Give one triple (--ir --vis --fused) or three folders (--ir-dir --vis-dir --fused-dir)
    whose images pair up by file name; folders print one row per image and the mean.
    Each metric's formula and reference: the docstrings of pipeline/metrics.py.
    """
    import json

    from pipeline import metrics_report as report
    from pipeline.metrics import CONVENTIONS

    if convention not in CONVENTIONS:
        fail(f"--convention must be one of {', '.join(CONVENTIONS)}, not {convention!r}", 2)
    single = (ir, vis, fused)
    folders = (ir_dir, vis_dir, fused_dir)
    if any(single) and any(folders):
        fail("give either --ir/--vis/--fused or --ir-dir/--vis-dir/--fused-dir, not both", 2)
    is_single = any(single) or not any(folders)
    if is_single and not all(single):
        fail("give all three of --ir, --vis and --fused (or the three --*-dir folders)", 2)
    if not is_single and not all(folders):
        fail("give all three of --ir-dir, --vis-dir and --fused-dir", 2)
    try:
        if is_single:
            scored = [report.score_files(ir, vis, fused, convention)]
        else:
            scored = report.score_folders(ir_dir, vis_dir, fused_dir, convention)
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


# --- fuse and model (pipeline/fuse.py, models/) -------------------------------------------


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
    ir_dir: Annotated[
        Path | None, typer.Option("--ir-dir", help="Folder of infrared images.")
    ] = None,
    vis_dir: Annotated[
        Path | None, typer.Option("--vis-dir", help="Folder of visible images (same names).")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Checkpoint file (artifacts/model.pt or a training checkpoint) or MLflow URI "
            "(models:/coconet@champion, runs:/<run_id>/model).",
        ),
    ] = "artifacts/model.pt",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    resize: Annotated[
        bool, typer.Option("--resize", help="Resize the infrared image to the visible size.")
    ] = False,
    bits: Annotated[int, typer.Option("--bits", help="Output bit depth: 8 or 16.")] = 8,
    ext: Annotated[str, typer.Option("--ext", help="Output format in folder mode.")] = "png",
) -> None:
    """Fuse an infrared/visible pair (--ir --vis -o OUT) or two folders (--ir-dir --vis-dir -o DIR).

    Folder pairs match by file name. A colour visible image gives a colour result (fused in
    YCbCr). Inputs may be 8- or 16-bit PNG/BMP/JPG/TIFF. Every pair is checked before anything
    is written, and each output file is written atomically.
    """
    from rich.progress import track

    from pipeline import fuse as fusion

    single, folders = (ir, vis), (ir_dir, vis_dir)
    if any(single) and any(folders):
        fail("give either --ir/--vis or --ir-dir/--vis-dir, not both", 2)
    if not all(single) and not all(folders):
        fail("give --ir and --vis (one pair) or --ir-dir and --vis-dir (folders)", 2)
    if output is None:
        fail("give the output with -o (a file for one pair, a folder for --ir-dir/--vis-dir)", 2)
    if bits not in (8, 16):
        fail(f"--bits must be 8 or 16, not {bits}", 2)
    try:
        if all(single):
            fusion.read_pair(vis, ir, resize)  # check the inputs before loading the model
            net = fusion.load_fusion_model(model, device)
            fusion.fuse_files(net, vis, ir, output, resize, bits)
            typer.echo(f"wrote {output}")
        else:
            plan = fusion.plan_directory(
                vis_dir, ir_dir, output, f".{ext.lstrip('.')}", resize, bits
            )
            net = fusion.load_fusion_model(model, device)

            def progress(items):
                return track(items, description="fusing", total=len(plan), transient=True)

            fusion.fuse_directory(net, plan, resize, bits, progress)
            typer.echo(f"wrote {len(plan)} fused images to {output}")
    except (ImageError, fusion.ModelLoadError) as exc:
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
    from rich.console import Console
    from rich.table import Table

    from models.coconet import CoCoNet
    from models.summary import summary
    from models.vgg import VGGWeightsError
    from pipeline.params import load_params

    try:
        width, height = (int(v) for v in size.lower().split("x"))
        if width < 1 or height < 1:
            raise ValueError
    except ValueError:
        fail(f"--size must look like 640x480, not {size!r}", 2)
    weights = vgg_weights or load_params(params_file).model.vgg_weights
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


# --- train and evaluate (pipeline/train.py, pipeline/evaluate.py) -------------------------

RootOption = Annotated[
    Path | None, typer.Option("--root", help="Project root for data and outputs.")
]


@app.command()
def train(
    params_file: ParamsOption = PARAMS_FILE,
    root: RootOption = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on CPU even if CUDA is present.")] = (
        False
    ),
) -> None:
    """Train CoCoNet (phase 1 adaptive loss, phase 2 + contrastive) on data/patches.h5.

    Resumes from the last checkpoint in artifacts/checkpoints when it was made with the same
    train/model params and patches. Tracks the run in MLflow and writes artifacts/model.pt,
    artifacts/train_run.json and reports/train_loss.csv. Data-parallel:
    torchrun --nproc_per_node=N -m pipeline.train.
    """
    from models.vgg import VGGWeightsError
    from pipeline.params import PROJECT_ROOT, load_params
    from pipeline.train import TrainPaths
    from pipeline.train import train as run_training

    try:
        record = run_training(
            load_params(params_file), TrainPaths((root or PROJECT_ROOT).resolve()), cpu
        )
    except VGGWeightsError as exc:
        fail(str(exc))
    if record:
        typer.echo(f"MLflow run {record['run_id']}; model {record['model_uri']}")


@app.command()
def evaluate(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Evaluate the trained model and the classical baselines on the test split.

    Writes reports/metrics.json, reports/evaluation/ (per_image.csv, report.md, gallery/,
    fused/) and logs them to the training's MLflow run (artifacts/train_run.json).
    """
    from pipeline.evaluate import EvalPaths
    from pipeline.evaluate import evaluate as run_evaluation
    from pipeline.fuse import ModelLoadError
    from pipeline.params import PROJECT_ROOT, load_params

    paths = EvalPaths((root or PROJECT_ROOT).resolve())
    try:
        means = run_evaluation(load_params(params_file), paths)
    except ModelLoadError as exc:
        fail(str(exc))
    typer.echo(f"evaluated {len(means)} methods; see {paths.out / 'report.md'}")


# --- register, lineage and flows (pipeline/register.py, pipeline/lineage.py, flows/) -------


@app.command()
def register(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Register the trained model as params register.model_name and promote it by rule.

    The first version becomes 'champion'; a later one only if it beats the champion on at least
    register.min_wins of register.promote_metrics on the same test split, else 'challenger'.
    Writes artifacts/registered.json (the DVC register stage runs this).
    """
    from pipeline.params import PROJECT_ROOT, load_params
    from pipeline.register import register as run_register

    try:
        record = run_register(load_params(params_file), (root or PROJECT_ROOT).resolve())
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"{record['name']} v{record['version']} -> {record['alias']}: {record['reason']}")


@app.command()
def lineage(
    target: Annotated[
        str, typer.Argument(help="Model URI (models:/name@alias, models:/name/N) or run id.")
    ] = "models:/coconet@champion",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Re-hash local data and outputs; exit 1 on any drift."),
    ] = False,
    root: RootOption = None,
) -> None:
    """Show a model's lineage: version and aliases, MLflow run, dvc.lock hashes, datasets.

    Read from what register recorded in MLflow, so it survives deleted local data. --verify
    recomputes DVC's md5 of each recorded path (and the params digest) and reports drift.
    """
    from pipeline.lineage import LineageError, audit
    from pipeline.params import PROJECT_ROOT

    try:
        text, drift = audit(target, as_json, verify, (root or PROJECT_ROOT).resolve())
    except LineageError as exc:
        fail(str(exc))
    typer.echo(text)
    if drift:
        fail("local files differ from the recorded lineage (see verify above)")


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-S",
        help="Override a param before running, e.g. -S train.phase1_epochs=1 (edits params.yaml).",
    ),
]
InboxOption = Annotated[
    Path | None,
    typer.Option("--inbox", help="Inbox folder (default $COCONET_INBOX or <root>/inbox)."),
]


def _flow_failed(exc: Exception) -> None:
    fail(f"{type(exc).__name__}: {exc}")


@app.command()
def run(
    overrides: SetOption = None,
    retries: Annotated[int, typer.Option("--retries", help="Retries of the download.")] = 2,
    root: RootOption = None,
) -> None:
    """Run the pipeline as a Prefect flow: each DVC stage in order via `dvc repro -s <stage>`.

    Up-to-date stages are skipped by DVC. -S/--set key=value edits params.yaml first (kept, like
    `dvc exp run -S` in the workspace; validated, the file is restored if invalid). Without
    PREFECT_API_URL the flow runs against Prefect's temporary local server.
    """
    from flows.env import telemetry_off

    telemetry_off()
    from flows.dvc_cli import DvcError
    from flows.pipeline import pipeline
    from pipeline.params import PROJECT_ROOT

    try:
        result = pipeline(str((root or PROJECT_ROOT).resolve()), overrides or [], retries)
    except DvcError as exc:
        _flow_failed(exc)
    typer.echo(result["report"])


@app.command()
def retrain(inbox: InboxOption = None, root: RootOption = None) -> None:
    """Retrain once on new data: ingest inbox pairs, re-run what changed, register, promote.

    Inbox layout: inbox/<pair>/ir.<ext> + vis.<ext> (+ optional mask.<ext>), same sizes.

    Ends at once when there is nothing new or another retrain is running. A failed run leaves
    the inbox and the champion as they were.
    """
    from flows.env import telemetry_off

    telemetry_off()
    from flows.dvc_cli import DvcError
    from flows.retrain import retrain as retrain_flow
    from pipeline.params import PROJECT_ROOT

    try:
        result = retrain_flow(str((root or PROJECT_ROOT).resolve()), str(inbox) if inbox else None)
    except DvcError as exc:
        _flow_failed(exc)
    typer.echo(f"retrain: {result['status']}")
    for name, reason in (result.get("rejected") or {}).items():
        typer.echo(f"  rejected {name}: {reason}")
    if result.get("registered") and result["status"] == "retrained":
        reg = result["registered"]
        typer.echo(f"  {reg['name']} v{reg['version']} -> {reg['alias']}: {reg['reason']}")


@app.command()
def schedule(
    cron: Annotated[
        str | None, typer.Option("--cron", help='Cron schedule, e.g. "0 3 * * 1".')
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", help="Run every SECONDS instead.")
    ] = None,
    inbox: InboxOption = None,
    name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "coconet-retrain",
    root: RootOption = None,
) -> None:
    """Serve the retrain flow on a schedule until interrupted (needs a Prefect server).

    Start one with `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api
    (or a remote server's URL). One run at a time; stopping this process does not pause the
    schedule. Telemetry is off unless PREFECT_SERVER_ANALYTICS_ENABLED / DO_NOT_TRACK are set.
    """
    from flows.env import telemetry_off

    telemetry_off()
    from flows.schedule import ScheduleError, serve
    from pipeline.params import PROJECT_ROOT

    try:
        serve((root or PROJECT_ROOT).resolve(), inbox, cron, interval, name)
    except ScheduleError as exc:
        fail(str(exc), 2)


# --- data stages: download, masks, patches (pipeline/download.py, masks.py, patches.py) ----


@app.command()
def download(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Fetch and verify the catalogued datasets and weights into data/raw and data/weights.

    Files are cached in $COCONET_CACHE (default ~/.cache/coconet) and verified by sha256/md5;
    set COCONET_MIRROR (a base URL or folder) to read https://HOST/PATH from MIRROR/HOST/PATH.
    """
    from pipeline.catalogue import CatalogueError
    from pipeline.download import DownloadError, run
    from pipeline.params import PROJECT_ROOT, load_params

    try:
        run(load_params(params_file), (root or PROJECT_ROOT).resolve())
    except (DownloadError, CatalogueError) as exc:
        fail(str(exc))


@app.command()
def masks(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Write one salient-target mask per training pair into data/masks (manual, sam, ir_saliency).

    Also scores the automatic method against the manual masks in reports/masks.json and
    draws reports/masks_preview.png.
    """
    from pipeline.masks import MasksError, run
    from pipeline.params import PROJECT_ROOT, load_params

    try:
        run(load_params(params_file), (root or PROJECT_ROOT).resolve())
    except MasksError as exc:
        fail(str(exc))


@app.command()
def patches(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Cut seeded training patches (visible Y, infrared, mask) into data/patches.h5."""
    from pipeline.params import PROJECT_ROOT, load_params
    from pipeline.patches import run

    run(load_params(params_file), (root or PROJECT_ROOT).resolve())
