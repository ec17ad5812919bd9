"""``coconet`` commands running one pipeline stage each (what ``dvc repro`` runs as modules)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer

from pipeline.cli.app import DeviceOption, ParamsOption, RootOption, app, fail
from pipeline.core.defaults import PARAMS_FILE


def _run_stage(stage: str, params_file: Path, root: Path | None, **options: Any) -> Any:
    """Run ``pipeline.stages.<stage>`` as ``python -m`` would; an expected error -> one line.
    The stage module (and with it torch, mlflow) is imported only now: ``--help`` stays fast."""
    from pipeline.core.stage import run_stage  # the params models (pydantic): not for fuse

    module = importlib.import_module(f"pipeline.stages.{stage}")
    return run_stage(module.run, stage, params_file, root, fail=fail, **options)


@app.command()
def download(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Fetch and verify the catalogued datasets and weights into data/raw and data/weights.

    Files are cached in $COCONET_CACHE (default ~/.cache/coconet) and verified by sha256/md5;
    set COCONET_MIRROR (a base URL or folder) to read https://HOST/PATH from MIRROR/HOST/PATH.
    """
    _run_stage("download", params_file, root)


@app.command()
def masks(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Write one salient-target mask per training pair into data/masks (manual, sam, ir_saliency).

    Also scores the automatic method against the manual masks in reports/masks.json and
    draws reports/masks_preview.png.
    """
    _run_stage("masks", params_file, root)


@app.command()
def patches(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Cut seeded training patches (visible Y, infrared, mask) into data/patches.h5."""
    _run_stage("patches", params_file, root)


@app.command()
def train(
    params_file: ParamsOption = PARAMS_FILE,
    root: RootOption = None,
    device: DeviceOption = None,
) -> None:
    """Train CoCoNet (phase 1 adaptive loss, phase 2 + contrastive) on data/patches.h5.

    Resumes from the last checkpoint in artifacts/checkpoints when it was made with the same
    train/model params and patches. Tracks the run in MLflow and writes artifacts/model.pt,
    artifacts/train_run.json and reports/train_loss.csv. Data-parallel:
    torchrun --nproc_per_node=N -m pipeline.stages.train.
    """
    record = _run_stage("train", params_file, root, device=device)
    if record:
        typer.echo(f"MLflow run {record['run_id']}; model {record['model_uri']}")


@app.command()
def evaluate(
    params_file: ParamsOption = PARAMS_FILE, root: RootOption = None, device: DeviceOption = None
) -> None:
    """Evaluate the trained model and the classical baselines on the test split.

    Writes reports/metrics.json, reports/evaluation/ (per_image.csv, report.md, gallery/,
    fused/) and logs them to the training's MLflow run (artifacts/train_run.json).
    """
    means = _run_stage("evaluate", params_file, root, device=device)
    typer.echo(f"evaluated {len(means)} methods; see reports/evaluation/report.md")


@app.command()
def register(params_file: ParamsOption = PARAMS_FILE, root: RootOption = None) -> None:
    """Register the trained model as params register.model_name and promote it by rule.

    The first version becomes 'champion'; a later one only if it beats the champion on at least
    register.min_wins of register.promote_metrics on the same test split, else 'challenger'.
    Writes artifacts/registered.json (the DVC register stage runs this).
    """
    record = _run_stage("register", params_file, root)
    typer.echo(f"{record['name']} v{record['version']} -> {record['alias']}: {record['reason']}")
