"""``coconet`` commands running one pipeline stage each (what ``dvc repro`` calls as modules)."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli import ParamsOption, RootOption, app, fail
from pipeline.params import PARAMS_FILE

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
    from pipeline.paths import ProjectPaths
    from pipeline.train import train as run_training

    try:
        record = run_training(
            load_params(params_file), ProjectPaths((root or PROJECT_ROOT).resolve()), cpu
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
    from pipeline.evaluate import evaluate as run_evaluation
    from pipeline.fuse import ModelLoadError
    from pipeline.params import PROJECT_ROOT, load_params
    from pipeline.paths import ProjectPaths

    paths = ProjectPaths((root or PROJECT_ROOT).resolve())
    try:
        means = run_evaluation(load_params(params_file), paths)
    except ModelLoadError as exc:
        fail(str(exc))
    typer.echo(f"evaluated {len(means)} methods; see {paths.evaluation / 'report.md'}")


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
