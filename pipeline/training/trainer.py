"""The training loop: model, losses, optimiser, data, checkpoints and run tracking per step.

:func:`train_model` runs (or resumes) the two-phase schedule in this process; under ``torchrun``
each process joins the process group and rank 0 tracks and saves.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models.coconet import CoCoNet
from models.contrast import contrast_entry, output_contrast
from models.objective import TOTAL, FusionObjective
from models.official import VGG19_CONVS
from models.scaling import to_signed, to_unit
from models.state import is_contrast_only
from pipeline.core.errors import CoconetError, InputError
from pipeline.core.params import Params, TrainParams
from pipeline.core.paths import ProjectPaths
from pipeline.data.patch_dataset import PatchDataset
from pipeline.inference import checkpoint_state
from pipeline.reference_models import official_checkpoint
from pipeline.tracking.training_run import TRACKING_ERRORS, RunTracker
from pipeline.training import distributed
from pipeline.training.checkpoint import (
    checkpoint_path,
    find_resumable,
    fingerprint,
    latest_checkpoint,
    mark_tracking_lost,
    params_digest,
    rng_state,
    save_checkpoint,
)
from pipeline.training.checkpoint import set_rng_state as restore_rng_state
from pipeline.training.outputs import history_columns, write_loss_csv, write_model_file

OBJECTIVE_PARAMS = (  # the train params the objective takes, by the same names
    "contrast_weight",
    "ssim_weight",
    "c1",
    "c2",
    "ssim_window",
    "ssim_sigma",
    "mse_range",
    "ssim_padding",
    "ssim_reduction",
    "gradient_padding",
    "contrastive_mode",
    "detail_weight",
    "detail_gain",
)


class TrainingDivergedError(CoconetError, RuntimeError):
    """A loss or gradient became NaN or infinite: training stops without saving that state."""


class TrackingLostError(CoconetError, RuntimeError):
    """Training finished, but the MLflow store went away: the run is incomplete until the next
    training run logs it from the kept checkpoint."""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def phase_of(epoch: int, params: Params) -> int:
    """1 for the first ``phase1_epochs`` epochs (0-based ``epoch``), 2 after."""
    return 1 if epoch < params.train.phase1_epochs else 2


def load_patches(path: Path) -> PatchDataset:
    """The patches dataset; a missing file is a clear error naming the stage to run."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no patches file; run the patches stage first (dvc repro patches)"
        )
    dataset = PatchDataset(path)
    if len(dataset) == 0:
        raise InputError(f"{path}: contains no patches")
    return dataset


def load_initial_weights(model, source: str) -> None:
    """Fine-tuning: start from ``source`` ('official' or a checkpoint file) instead of scratch.

    Every tensor comes from the checkpoint except VGG-19 layers it says it lacks (an official
    checkpoint holds conv1_1 .. conv3_4) or, a fusion model file, does not hold (conv4_1 ..,
    used only by the contrastive loss): those keep ``model.vgg_weights``.
    """
    path = official_checkpoint() if source == "official" else Path(source)
    state, meta = checkpoint_state(path)
    keep = model.state_dict()
    unset = vgg_keys(meta.get("official", {}).get("vgg_not_set", []))
    unset += [key for key in keep if is_contrast_only(key) and key not in state]
    for key in unset:
        state[key] = keep[key]
    model.load_state_dict(state)


def vgg_keys(convs: list[str]) -> list[str]:
    """State-dict keys of our VGG-19 convolutions named ``conv4_1`` etc."""
    return [f"vgg.features.{VGG19_CONVS[c]}.{t}" for c in convs for t in ("weight", "bias")]


def build_objective(model: CoCoNet, train: TrainParams) -> FusionObjective:
    """The training objective with the ``train`` params' loss settings (shares the VGG)."""
    return FusionObjective(model.vgg, **train.model_dump(include=set(OBJECTIVE_PARAMS)))


class Trainer:
    """Model, objective, optimiser and one process's view of the data."""

    def __init__(self, params: Params, dataset: PatchDataset, runtime: distributed.Runtime) -> None:
        self.params = params
        self.runtime = runtime
        self.placement = runtime.placement
        tp = params.train
        device = self.placement.device
        self.memory_format = torch.channels_last
        self.model = CoCoNet(vgg_weights=params.model.vgg_weights)
        self.model.output_contrast = output_contrast(
            params.model.output_mean, params.model.output_sd
        )
        if tp.init_from:
            load_initial_weights(self.model, tp.init_from)
        self.model = self.model.to(device, memory_format=self.memory_format)
        self.objective = build_objective(self.model, tp).to(device)
        self.terms = self.objective.names
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=tp.lr)
        # train.ema_decay: an EMA of the weights (BatchNorm statistics too), updated every step
        self.average = (
            AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(tp.ema_decay), use_buffers=True
            )
            if tp.ema_decay is not None
            else None
        )
        self.net = (
            DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
            if runtime.distributed
            else self.model
        )
        self.sampler = DistributedSampler(
            dataset,
            num_replicas=runtime.world_size,
            rank=runtime.rank,
            shuffle=True,
            seed=tp.seed,
            drop_last=False,
        )
        self.loader = DataLoader(
            dataset,
            batch_size=max(1, tp.batch_size // runtime.world_size),
            sampler=self.sampler,
            num_workers=tp.num_workers,
            pin_memory=device.type == "cuda",
            drop_last=False,
        )

    def steps_per_epoch(self) -> int:
        cap = self.params.train.max_steps_per_epoch
        return min(len(self.loader), cap) if cap else len(self.loader)

    @property
    def fusion_model(self) -> CoCoNet:
        """The model training gives: the weight average when ``train.ema_decay`` is set."""
        return self.average.module if self.average is not None else self.model

    def state(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.average is not None:
            state["average"] = self.average.state_dict()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])

    def step(self, batch: torch.Tensor, phase: int) -> torch.Tensor:
        """One optimisation step; returns one tensor (so one all-reduce syncs it): the
        objective's terms in :attr:`terms` order, then the gradient norm, detached and
        unsynchronised (read it with :func:`term_values`; :func:`check_step_finite`)."""
        batch = batch.to(self.placement.device, non_blocking=True)
        vis, ir = batch[:, 0:1], batch[:, 1:2]
        mask = (batch[:, 2:3] > 0.5).to(batch.dtype)
        with self.placement.autocast():
            out = self.net(
                to_signed(vis).contiguous(memory_format=self.memory_format),
                to_signed(ir).contiguous(memory_format=self.memory_format),
            )
        terms = self.objective(to_unit(out.float()), vis, ir, mask, phase, self.placement.autocast)
        self.optimizer.zero_grad(set_to_none=True)
        terms[TOTAL].backward()
        grad_norm = self.grad_norm()
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        return torch.stack([*(terms[name] for name in self.terms), grad_norm]).detach()

    def grad_norm(self) -> torch.Tensor:
        """The total L2 norm of the gradients, one fused kernel per device (no sync)."""
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"]]
        grads = [g for g in grads if g is not None]
        if not grads:
            return torch.zeros((), device=self.placement.device)
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())


def term_values(values: torch.Tensor, terms: Sequence[str]) -> dict[str, float]:
    """A step's ``values`` (:meth:`Trainer.step`, on the CPU) as ``{term: value}``."""
    return dict(zip(terms, values[: len(terms)].tolist(), strict=True))


def train_model(
    params: Params, paths: ProjectPaths, device: str | None = None
) -> dict[str, Any] | None:
    """Run (or resume) the two-phase training on ``device`` (default ``train.device``);
    returns the run record on rank 0."""
    runtime = distributed.setup(device or params.train.device, params.train.precision)
    try:
        return _train(params, paths, runtime)
    finally:
        distributed.cleanup(runtime)


def _train(params: Params, paths: ProjectPaths, runtime: distributed.Runtime) -> dict | None:
    tp = params.train
    dataset = load_patches(paths.patches)
    seed_everything(tp.seed + runtime.rank)
    trainer = Trainer(params, dataset, runtime)
    terms = trainer.terms
    expected = fingerprint(params, paths.patches, terms)
    state, message = find_resumable(paths.checkpoints, expected)
    total_epochs = tp.phase1_epochs + tp.phase2_epochs
    lost = state.get("tracking_lost") if state is not None else None
    if lost:
        message = (
            f"{message}; its MLflow run lost the store at step {lost['step']}: the losses it "
            "missed are logged from the checkpoint"
        )
    elif state is not None and int(state["epoch"]) >= total_epochs:  # its run has ended
        state = None
        message = (
            f"the latest checkpoint completed all {total_epochs} epochs and its MLflow run has "
            "ended (a finished run is never reopened): starting fresh"
        )
    start_epoch, step, history, run_id = 0, 0, [], None
    if state is not None:
        trainer.load_state(state)
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = state["history"].tolist()
        run_id = state.get("run_id")
    steps_per_epoch = trainer.steps_per_epoch()

    placement = runtime.placement
    tracker = (
        RunTracker(params, paths, placement, runtime.world_size, run_id)
        if runtime.is_main
        else None
    )
    if runtime.is_main:
        print(
            f"training on {placement.device} in {placement.precision} "
            f"(train.device: {tp.device}, train.precision: {tp.precision})",
            flush=True,
        )
    if tracker:
        print(message, flush=True)
        tracker.start(params_digest(params), start_epoch if state is not None else None)
        if lost:
            count = tracker.replay(history, terms, tp.log_every, lost)
            print(f"logged {count} metrics the lost store missed", flush=True)
    if state is not None:  # restored last, so nothing above can shift the random streams
        saved = state["rng"]
        restore_rng_state(saved[runtime.rank] if runtime.rank < len(saved) else saved[0])
    bar = tqdm(
        total=(total_epochs - start_epoch) * steps_per_epoch,
        disable=not runtime.is_main,
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(start_epoch, total_epochs):
            phase = phase_of(epoch, params)
            trainer.model.train()
            trainer.sampler.set_epoch(epoch)
            sums = torch.zeros(len(terms), dtype=torch.float64)
            tic = time.perf_counter()
            seen = 0
            for index, batch in enumerate(trainer.loader):
                if index >= steps_per_epoch:
                    break
                values = distributed.all_reduce_mean(trainer.step(batch, phase), runtime).cpu()
                step += 1
                kept = checkpoint_path(paths.checkpoints, epoch) if epoch else None
                check_step_finite(values, terms, step, epoch + 1, total_epochs, phase, kept)
                losses = term_values(values, terms)
                seen += batch.shape[0] * runtime.world_size
                sums += values[: len(terms)].double()
                history.append([step, epoch + 1, phase, *losses.values()])
                bar.set_description(f"epoch {epoch + 1}/{total_epochs} phase {phase}")
                bar.set_postfix(loss=f"{losses[TOTAL]:.4f}")
                bar.update(1)
                if tracker and step % tp.log_every == 0:
                    tracker.log_step(step, losses)
            elapsed = time.perf_counter() - tic
            means = dict(zip(terms, (sums / max(1, steps_per_epoch)).tolist(), strict=True))
            rngs = _gather_rng(runtime)
            if tracker:
                tracker.log_epoch(epoch + 1, phase, means, seen / max(elapsed, 1e-9))
                save_checkpoint(
                    paths.checkpoints,
                    epoch + 1,
                    {
                        **trainer.state(),
                        "epoch": epoch + 1,
                        "phase": phase,
                        "step": step,
                        "history": torch.tensor(history, dtype=torch.float64).reshape(
                            -1, len(history_columns(terms))
                        ),
                        "rng": rngs,
                        "run_id": tracker.run_id,
                        "fingerprint": expected,
                        "tracking_lost": tracker.lost,
                    },
                )
            distributed.barrier(runtime)
        bar.close()
        if not tracker:
            return None
        write_loss_csv(paths.loss_csv, history, terms)
        model = trainer.fusion_model
        write_model_file(
            paths.model,
            model,
            {
                "vgg_weights": params.model.vgg_weights,
                "output_contrast": contrast_entry(model),
                "precision": str(placement.precision),
                "params": params.model_dump(mode="json", by_alias=True),
            },
        )
        if tracker.lost is None:
            try:
                return tracker.finish(model, paths.loss_csv, params_digest(params))
            except TRACKING_ERRORS as exc:  # the store went away while the model was logged
                tracker.lose(step, exc)
                mark_tracking_lost(paths.checkpoints, tracker.lost)
        raise TrackingLostError(
            f"training finished and {latest_checkpoint(paths.checkpoints)} is kept, but the "
            f"MLflow store was lost at step {tracker.lost['step']} ({tracker.lost['reason']}): "
            f"run {tracker.run_id} is incomplete; when the store is back, run the train stage "
            "again (dvc repro): it logs the run from the checkpoint without retraining"
        )
    except BaseException as exc:
        bar.close()
        if tracker:
            tracker.fail(str(exc) if isinstance(exc, TrainingDivergedError) else None)
        raise


def check_step_finite(
    values: torch.Tensor,
    terms: Sequence[str],
    step: int,
    epoch: int,
    epochs: int,
    phase: int,
    kept: Path | None,
) -> None:
    """Raise :class:`TrainingDivergedError` naming the step if a loss or the gradient norm
    (``values``: the objective's ``terms``, then the norm, on the CPU) is not finite; ``kept``
    is the last checkpoint of this training, if any."""
    if bool(torch.isfinite(values).all()):
        return
    loss, grad_norm = term_values(values, terms)[TOTAL], values[-1].item()
    what = f"loss ({loss})" if not torch.isfinite(values[:-1]).all() else f"gradient ({grad_norm})"
    raise TrainingDivergedError(
        f"non-finite {what} at step {step} (epoch {epoch}/{epochs}, phase {phase}): training "
        f"diverged (lower train.lr?); nothing from this state was saved, the last good "
        f"checkpoint is {kept or 'none (no epoch finished)'}"
    )


def _gather_rng(runtime: distributed.Runtime) -> list[dict[str, Any]]:
    """Every rank's RNG state, gathered (by collective) so rank 0 can store them all."""
    state = rng_state()
    if not runtime.distributed:
        return [state]
    gathered: list[Any] = [None] * runtime.world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered
