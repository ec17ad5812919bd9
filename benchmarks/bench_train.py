"""Training throughput (patches per second) of CoCoNet's two phases, fp32 and bf16, and the
bf16 loss curve against fp32's.

Runs the train stage's own ``Trainer.step`` (forward, losses, backward, Adam step) on synthetic
64x64 patches (half with a mask, so phase 2's contrastive term runs), batch 30, random VGG,
after warm-up steps; on CUDA too if present. Ratios are against the fp32 figures this project
measured on its 2-core CPU machines before bf16 and channels_last training (11.0 and 5.8
patches/s). Those figures predate the official contrastive form (``train.contrastive_mode:
batch``, the default since): phase 2 is timed in both forms, and ``per_sample`` is the maths
the 5.8 was measured with. ``--curve-steps N`` also trains N steps from the same seed in fp32
and in bf16 and prints both loss curves and their largest relative gap.

    uv run python benchmarks/bench_train.py [--steps 5] [--batch 30] [--curve-steps 200]
"""

from __future__ import annotations

import argparse
import time

import torch

from models.objective import TOTAL
from pipeline.core.params import Params
from pipeline.core.placement import Placement, Precision, cuda_available
from pipeline.training.distributed import Runtime
from pipeline.training.trainer import Trainer, seed_everything, term_values

BASELINE_CPU_FP32 = {1: 11.0, 2: 5.8}  # patches/s, fp32, contiguous, before this benchmark's work


class SyntheticPatches(torch.utils.data.Dataset):
    """Random smooth patches in the PatchDataset item format: (3, S, S) float 0..1, mask 0/1."""

    def __init__(self, n: int, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        coarse = torch.rand(n, 2, size // 8, size // 8, generator=generator)
        self.data = torch.zeros(n, 3, size, size)
        self.data[:, :2] = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")
        self.data[::2, 2, size // 4 : size // 2, size // 4 : size // 2] = 1

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


def make_trainer(
    device: torch.device, precision: str, batch: int, n: int, size: int, mode: str = "batch"
) -> Trainer:
    seed_everything(0)
    train = {"batch_size": batch, "precision": precision, "lr": 5e-4, "contrastive_mode": mode}
    params = Params.model_validate({"model": {"vgg_weights": "random"}, "train": train})
    placement = Placement(device, Precision(precision))
    trainer = Trainer(params, SyntheticPatches(n, size), Runtime(placement))
    trainer.model.train()
    return trainer


def throughput(
    device: torch.device, precision: str, phase: int, args, mode: str = "batch"
) -> float:
    """Patches per second over ``args.steps`` timed steps of ``phase``."""
    trainer = make_trainer(device, precision, args.batch, args.batch * 4, args.size, mode)
    batches = [b for b, _ in zip(trainer.loader, range(4), strict=False)]
    for i in range(args.warmup):
        trainer.step(batches[i % len(batches)], phase)
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for i in range(args.steps):
        trainer.step(batches[i % len(batches)], phase)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - tic)


def loss_curve(device: torch.device, precision: str, steps: int, args) -> list[float]:
    """Total loss of ``steps`` steps (phase 1, then phase 2 for the last quarter)."""
    trainer = make_trainer(device, precision, args.batch, args.batch * steps, args.size)
    curve = []
    for index, batch in enumerate(trainer.loader):
        if index >= steps:
            break
        phase = 1 if index < steps * 3 // 4 else 2
        curve.append(term_values(trainer.step(batch, phase).cpu(), trainer.terms)[TOTAL])
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=30, help="patches per step")
    parser.add_argument("--size", type=int, default=64, help="patch side")
    parser.add_argument("--curve-steps", type=int, default=0, help="fp32 vs bf16 loss curves")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    args = parser.parse_args()
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if cuda_available() and args.device in ("all", "cuda"):
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    print(f"batch {args.batch}, {args.size}x{args.size} patches, {args.steps} timed steps")
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for phase, mode in ((1, "batch"), (2, "batch"), (2, "per_sample")):
            rates = {p: throughput(device, p, phase, args, mode) for p in ("fp32", "bf16")}
            label = f"phase {phase}" + (f" ({mode})" if phase == 2 else "")
            line = f"{name:>8}  {label:>22}: " + "  ".join(
                f"{p} {r:8.1f} patches/s" for p, r in rates.items()
            )
            line += f"  bf16/fp32 {rates['bf16'] / rates['fp32']:.2f}x"
            if device.type == "cpu":
                base = BASELINE_CPU_FP32[phase]
                line += f"  vs before ({base} fp32): bf16 {rates['bf16'] / base:.2f}x"
            print(line, flush=True)
        if args.curve_steps:
            fp32 = loss_curve(device, "fp32", args.curve_steps, args)
            bf16 = loss_curve(device, "bf16", args.curve_steps, args)
            gaps = [abs(b - f) / abs(f) for f, b in zip(fp32, bf16, strict=True)]
            print(f"{name}: step, fp32 loss, bf16 loss")
            for step in range(0, args.curve_steps, max(1, args.curve_steps // 20)):
                print(f"  {step + 1:4d}  {fp32[step]:.5f}  {bf16[step]:.5f}")
            print(f"{name}: largest relative gap over {args.curve_steps} steps {max(gaps):.2%}")


if __name__ == "__main__":
    main()
