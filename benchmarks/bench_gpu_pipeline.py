"""The paper schedule end to end on one GPU without the tracking services (a GPU machine with
no network and no MLflow/DVC install): the download, masks and patches stages' own ``run``,
the train stage's ``Trainer.step`` over the whole schedule, and the evaluate stage's scoring of
the test split against the classical baselines. Prints stage times, patches/s and the ranking.

Offline choices, forced by having no network: ``model.vgg_weights=random``,
``masks.method=ir_saliency``, ``download.{vgg19,sam,official}=none``; everything else is the
``paper`` schedule of ``params.yaml``. ``--minutes`` caps training (the report says how many of
the schedule's steps ran).

    python benchmarks/bench_gpu_pipeline.py --root /tmp/run --mirror MIRROR [--minutes 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.objective import TOTAL
from pipeline.core.imageio import read_image, to_grey
from pipeline.core.params import PARAMS_FILE, load_params
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import Placement, Precision
from pipeline.evaluation.baselines import BASELINES
from pipeline.evaluation.report import rank_methods, ranking_table
from pipeline.fusion import fuse_arrays
from pipeline.metrics import METRIC_DIRECTION, beats, compute_metrics, mean_metrics
from pipeline.stages import download, masks, patches
from pipeline.training.distributed import setup
from pipeline.training.trainer import (
    Trainer,
    load_patches,
    phase_of,
    seed_everything,
    term_values,
)


def timed(label: str, times: dict[str, float], fn, *args):
    tic = time.perf_counter()
    result = fn(*args)
    times[label] = time.perf_counter() - tic
    print(f"{label}: {times[label]:.1f} s", flush=True)
    return result


def train(params, paths: ProjectPaths, minutes: float) -> tuple[torch.nn.Module, dict]:
    """The schedule's steps until done or ``minutes`` pass; resumable across calls (a state file
    beside the patches after every epoch), so a long schedule can span several machine calls."""
    runtime = setup(params.train.device, params.train.precision)
    seed_everything(params.train.seed)
    trainer = Trainer(params, load_patches(paths.patches), runtime)
    total_epochs = params.train.phase1_epochs + params.train.phase2_epochs
    per_epoch = trainer.steps_per_epoch()
    state_file = paths.data / "bench_gpu_state.pt"
    done = {"epoch": 0, "steps": 0, "seconds": 0.0, "rates": {1: [], 2: []}, "losses": []}
    if state_file.is_file():
        saved = torch.load(state_file, map_location=runtime.device, weights_only=False)
        trainer.load_state(saved.pop("trainer"))
        done = saved
        print(f"resumed after epoch {done['epoch']} ({done['steps']} steps)", flush=True)
    planned = total_epochs * per_epoch
    deadline = time.perf_counter() + 60 * minutes
    print(f"training on {runtime.placement.describe()}: {planned} steps", flush=True)
    for epoch in range(done["epoch"], total_epochs):
        if time.perf_counter() > deadline:
            break
        phase = phase_of(epoch, params)
        trainer.model.train()
        trainer.sampler.set_epoch(epoch)
        tic, count = time.perf_counter(), 0
        for index, batch in enumerate(trainer.loader):
            if index >= per_epoch:
                break
            values = trainer.step(batch, phase)
            done["steps"], count = done["steps"] + 1, count + batch.shape[0]
            if done["steps"] % 500 == 0:
                total = term_values(values.cpu(), trainer.terms)[TOTAL]
                done["losses"].append(round(total, 4))
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tic
        done["rates"][phase].append(count / seconds)
        done["seconds"] += seconds
        done["epoch"] = epoch + 1
        torch.save({**done, "trainer": trainer.state()}, state_file)
    report = {
        **done,
        "planned": planned,
        "finished": done["epoch"] == total_epochs,
        "patches_per_s": {p: float(np.median(r)) for p, r in done["rates"].items() if r},
        "precision": str(runtime.placement.precision),
        "device": str(runtime.device),
    }
    return trainer.model.eval(), report


def evaluate(
    model, paths: ProjectPaths, precision: str, device: str
) -> dict[str, dict[str, float]]:
    index = pd.read_csv(paths.index, keep_default_na=False, dtype=str)
    test = index[index["split"] == "test"]
    settings = Placement(torch.device(device), Precision(precision))
    rows: dict[str, list[dict]] = {"CoCoNet": [], **{name: [] for name in BASELINES}}
    for pair in test.itertuples(index=False):
        ir, vis = read_image(paths.root / pair.ir), read_image(paths.root / pair.vis)
        fused = {"CoCoNet": fuse_arrays(model, vis, ir, settings)}
        fused |= {n: f(to_grey(vis), to_grey(ir)) for n, f in BASELINES.items()}
        for name, image in fused.items():
            rows[name].append(compute_metrics(ir, vis, image))
    return {name: mean_metrics(r) for name, r in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a scratch project root")
    parser.add_argument("--mirror", required=True, help="data mirror (folder or base URL)")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time cap")
    args = parser.parse_args()
    params = load_params(PARAMS_FILE)
    params.download.mirror = args.mirror
    params.download.vgg19 = params.download.sam = params.download.official = "none"
    params.model.vgg_weights = "random"
    params.masks.method = "ir_saliency"
    paths = ProjectPaths(args.root.resolve())
    times: dict[str, float] = {}
    if not paths.patches.is_file():
        timed("download", times, download.run, params, paths)
        timed("masks", times, masks.run, params, paths)
        timed("patches", times, patches.run, params, paths)
    model, report = timed("train", times, train, params, paths, args.minutes)
    print(
        f"trained {report['steps']} of the schedule's {report['planned']} steps in "
        f"{report['seconds']:.0f} s ({report['precision']}); patches/s by phase "
        f"{report['patches_per_s']}; loss every 500 steps {report['losses']}"
    )
    if not report["finished"]:
        print("schedule not finished: run again with the same --root to continue")
        return
    means = timed("evaluate", times, evaluate, model, paths, report["precision"], report["device"])
    print(ranking_table(means, METRIC_DIRECTION))
    ranks = rank_methods(means, METRIC_DIRECTION)
    wins = sum(beats(m, means["CoCoNet"][m], means["average"][m]) for m in METRIC_DIRECTION)
    print(f"mean ranks {ranks}; CoCoNet beats the pixel average on {wins} of 12 metrics")
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
