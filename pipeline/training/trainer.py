"""The training loop: model, losses, optimiser, data, checkpoints and run tracking per step.

:func:`train_model` runs (or resumes) the two-phase schedule in this process; under ``torchrun``
each process joins the process group and rank 0 tracks and saves.
"""

from __future__ import annotations

import random
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models.scaling import to_signed, to_unit
from pipeline.core.errors import CoconetError, InputError
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.precision import autocast_context, resolve_precision
from pipeline.training import distributed
from pipeline.training.checkpoint import (
    checkpoint_path,
    find_resumable,
    fingerprint,
    rng_state,
    save_checkpoint,
)
from pipeline.training.checkpoint import set_rng_state as restore_rng_state
from pipeline.training.run_tracking import HISTORY_COLUMNS, LOSS_NAMES, RunTracker


class TrainingDivergedError(CoconetError, RuntimeError):
    """A loss or gradient became NaN or infinite: training stops without saving that state."""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def phase_of(epoch: int, params: Params) -> int:
    """1 for the first ``phase1_epochs`` epochs (0-based ``epoch``), 2 after."""
    return 1 if epoch < params.train.phase1_epochs else 2


def load_patches(path: Path):
    """The patches dataset; a missing file is a clear error naming the stage to run."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no patches file; run the patches stage first (dvc repro patches)"
        )
    from pipeline.data.patch_dataset import PatchDataset

    dataset = PatchDataset(path)
    if len(dataset) == 0:
        raise InputError(f"{path}: contains no patches")
    return dataset


def load_initial_weights(model, source: str) -> None:
    """Fine-tuning: start from ``source`` ('official' or a checkpoint file) instead of scratch.

    Every tensor comes from the checkpoint except VGG-19 layers it says it lacks (an official
    checkpoint holds conv1_1 .. conv3_4): those keep ``model.vgg_weights``.
    """
    from pipeline.inference import checkpoint_state

    if source == "official":
        from pipeline.reference_models import official_checkpoint

        path = official_checkpoint()
    else:
        path = Path(source)
    state, meta = checkpoint_state(path)
    unset = meta.get("official", {}).get("vgg_not_set", [])
    if unset:
        keep = model.state_dict()
        for key in vgg_keys(unset):
            state[key] = keep[key]
    model.load_state_dict(state)


def vgg_keys(convs: list[str]) -> list[str]:
    """State-dict keys of our VGG-19 convolutions named ``conv4_1`` etc."""
    from models.official import VGG19_CONVS

    return [f"vgg.features.{VGG19_CONVS[c]}.{t}" for c in convs for t in ("weight", "bias")]


class Trainer:
    """Model, losses, optimiser and one process's view of the data."""

    def __init__(self, params: Params, dataset, runtime: distributed.Runtime) -> None:
        from models.coconet import CoCoNet
        from models.losses import AdaptiveFusionLoss, CoupledContrastiveLoss

        self.params = params
        self.runtime = runtime
        tp = params.train
        device = runtime.device
        self.precision = resolve_precision(tp.precision, device)
        self.memory_format = torch.channels_last
        self.model = CoCoNet(vgg_weights=params.model.vgg_weights)
        if tp.init_from:
            load_initial_weights(self.model, tp.init_from)
        self.model = self.model.to(device, memory_format=self.memory_format)
        self.adaptive = AdaptiveFusionLoss(
            ssim_weight=tp.ssim_weight,
            c1=tp.c1,
            c2=tp.c2,
            ssim_window=tp.ssim_window,
            ssim_sigma=tp.ssim_sigma,
            mse_range=tp.mse_range,
            ssim_padding=tp.ssim_padding,
            ssim_reduction=tp.ssim_reduction,
            gradient_padding=tp.gradient_padding,
        ).to(device)
        self.contrastive = CoupledContrastiveLoss(self.model.vgg, mode=tp.contrastive_mode)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=tp.lr)
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

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast for the network and the contrastive VGG, or nothing (fp32)."""
        return autocast_context(self.precision, self.runtime.device)

    def steps_per_epoch(self) -> int:
        cap = self.params.train.max_steps_per_epoch
        return min(len(self.loader), cap) if cap else len(self.loader)

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def step(self, batch: torch.Tensor, phase: int) -> torch.Tensor:
        """One optimisation step; returns the ``LOSS_NAMES`` values and the gradient norm,
        detached and unsynchronised (the caller checks them: see :func:`check_finite`)."""
        device = self.runtime.device
        batch = batch.to(device, non_blocking=True)
        vis, ir = batch[:, 0:1], batch[:, 1:2]
        mask = (batch[:, 2:3] > 0.5).to(batch.dtype)
        with self.autocast():
            out = self.net(
                to_signed(vis).contiguous(memory_format=self.memory_format),
                to_signed(ir).contiguous(memory_format=self.memory_format),
            )
        fused = to_unit(out.float())
        terms = self.adaptive.terms(fused, vis, ir)
        ssim, mse = terms["ssim"].mean(), terms["mse"].mean()
        adaptive = ssim + mse
        if phase == 2 and self.params.train.contrast_weight > 0:
            with self.autocast():  # the VGG features in bf16; the L1 ratios come out in fp32
                contrastive = self.contrastive(fused, vis, ir, mask).float()
        else:
            contrastive = fused.new_zeros(())
        loss = adaptive + self.params.train.contrast_weight * contrastive
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = self.grad_norm()
        self.optimizer.step()
        return torch.stack([loss, adaptive, contrastive, ssim, mse, grad_norm]).detach()

    def grad_norm(self) -> torch.Tensor:
        """The total L2 norm of the gradients, one fused kernel per device (no sync)."""
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"]]
        grads = [g for g in grads if g is not None]
        if not grads:
            return torch.zeros((), device=self.runtime.device)
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())


def train_model(
    params: Params,
    paths: ProjectPaths,
    force_cpu: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) the two-phase training; returns the run record on rank 0."""
    runtime = distributed.setup(force_cpu=force_cpu)
    try:
        return _train(params, paths, runtime)
    finally:
        distributed.cleanup(runtime)


def _train(params: Params, paths: ProjectPaths, runtime: distributed.Runtime) -> dict | None:
    tp = params.train
    dataset = load_patches(paths.patches)
    seed_everything(tp.seed + runtime.rank)
    trainer = Trainer(params, dataset, runtime)
    expected = fingerprint(params, paths.patches)
    state, message = find_resumable(paths.checkpoints, expected)
    start_epoch, step, history, run_id = 0, 0, [], None
    if state is not None:
        trainer.load_state(state)
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = state["history"].tolist()
        run_id = state.get("run_id")
    total_epochs = tp.phase1_epochs + tp.phase2_epochs
    steps_per_epoch = trainer.steps_per_epoch()

    tracker = (
        RunTracker(params, paths, runtime, run_id, trainer.precision) if runtime.is_main else None
    )
    if runtime.is_main:
        print(
            f"training on {runtime.device} in {trainer.precision} "
            f"(train.precision: {tp.precision})",
            flush=True,
        )
    if tracker:
        print(message, flush=True)
        tracker.start(resumed_epoch=start_epoch if state is not None else None)
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
            sums = torch.zeros(len(LOSS_NAMES), dtype=torch.float64)
            tic = time.perf_counter()
            seen = 0
            for index, batch in enumerate(trainer.loader):
                if index >= steps_per_epoch:
                    break
                values = distributed.all_reduce_mean(trainer.step(batch, phase), runtime).cpu()
                step += 1
                kept = checkpoint_path(paths.checkpoints, epoch) if epoch else None
                check_finite(values, step, epoch + 1, total_epochs, phase, kept)
                losses = values[: len(LOSS_NAMES)]
                seen += batch.shape[0] * runtime.world_size
                sums += losses.double()
                history.append([step, epoch + 1, phase, *losses.tolist()])
                bar.set_description(f"epoch {epoch + 1}/{total_epochs} phase {phase}")
                bar.set_postfix(loss=f"{losses[0].item():.4f}")
                bar.update(1)
                if tracker and step % tp.log_every == 0:
                    tracker.log_step(step, losses)
            elapsed = time.perf_counter() - tic
            means = (sums / max(1, steps_per_epoch)).tolist()
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
                            -1, len(HISTORY_COLUMNS)
                        ),
                        "rng": rngs,
                        "run_id": tracker.run_id,
                        "fingerprint": expected,
                    },
                )
            distributed.barrier(runtime)
        bar.close()
        if not tracker:
            return None
        return tracker.finish(trainer.model, history)
    except BaseException as exc:
        bar.close()
        if tracker:
            tracker.fail(str(exc) if isinstance(exc, TrainingDivergedError) else None)
        raise


def check_finite(
    values: torch.Tensor, step: int, epoch: int, epochs: int, phase: int, kept: Path | None
) -> None:
    """Raise :class:`TrainingDivergedError` naming the step if a loss or the gradient norm
    (``values``: the ``LOSS_NAMES`` values, then the norm, on the CPU) is not finite; ``kept``
    is the last checkpoint of this training, if any."""
    if bool(torch.isfinite(values).all()):
        return
    loss, grad_norm = values[0].item(), values[-1].item()
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
