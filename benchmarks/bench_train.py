"""Training throughput (patches per second) of CoCoNet's two phases, on CPU and on CUDA if present.

Runs the train stage's own ``Trainer.step`` (forward, losses, backward, Adam step; AMP and
channels_last on CUDA) on synthetic 64x64 patches (half with a mask, so phase 2's contrastive
term runs) with the params' batch size, after warm-up steps.

    uv run python benchmarks/bench_train.py [--steps 5] [--warmup 1] [--batch 30] [--size 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.core.params import Params
from pipeline.stages.train import Trainer
from pipeline.training.distributed import Runtime


class SyntheticPatches(torch.utils.data.Dataset):
    """Random patches in the PatchDataset item format: (3, S, S) float 0..1, mask 0/1."""

    def __init__(self, n: int, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.data = torch.rand(n, 3, size, size, generator=generator)
        self.data[:, 2] = 0
        self.data[::2, 2, size // 4 : size // 2, size // 4 : size // 2] = 1

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


def throughput(device: torch.device, phase: int, args: argparse.Namespace) -> float:
    """Patches per second over ``args.steps`` timed steps of ``phase``."""
    params = Params.model_validate(
        {"model": {"vgg_weights": "random"}, "train": {"batch_size": args.batch}}
    )
    dataset = SyntheticPatches(args.batch * (args.steps + args.warmup), args.size)
    trainer = Trainer(params, dataset, Runtime(device=device))
    trainer.model.train()
    batches = iter(trainer.loader)
    for _ in range(args.warmup):
        trainer.step(next(batches), phase)
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(args.steps):
        trainer.step(next(batches), phase)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=30, help="patches per step")
    parser.add_argument("--size", type=int, default=64, help="patch side")
    args = parser.parse_args()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    print(f"batch {args.batch}, {args.size}x{args.size} patches, {args.steps} timed steps")
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for phase in (1, 2):
            rate = throughput(device, phase, args)
            print(f"{name:>24}  phase {phase}: {rate:8.1f} patches/s")


if __name__ == "__main__":
    main()
