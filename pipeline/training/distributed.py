"""Optional data-parallel (DDP) setup from ``torchrun``'s environment.

Launched plainly, training runs in one process where ``train.device`` places it. Launched by
``torchrun`` (``WORLD_SIZE`` > 1 in the environment), each process is placed on its local
rank's GPU (or the CPU) and joins a process group: NCCL on GPUs, gloo on CPU. Only rank 0 logs,
tracks and saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.core.placement import Placement, place


@dataclass(frozen=True)
class Runtime:
    """Where this process trains (device and precision) and its place in the process group."""

    placement: Placement
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def device(self) -> torch.device:
        return self.placement.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto", precision: str = "auto") -> Runtime:
    """Place this process (``device``/``precision`` as in params) and, under ``torchrun``,
    initialise the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    placement = place(device, precision, local_rank=local_rank)
    use_cuda = placement.device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(placement.device)
    if world_size > 1 and not dist.is_initialized():
        if use_cuda:
            dist.init_process_group("nccl", device_id=placement.device)
        else:
            dist.init_process_group("gloo")
    return Runtime(placement, rank=rank, world_size=world_size, local_rank=local_rank)


def barrier(runtime: Runtime) -> None:
    """Wait for every process (no-op when not distributed)."""
    if runtime.distributed:
        if runtime.device.type == "cuda":
            dist.barrier(device_ids=[runtime.device.index])
        else:
            dist.barrier()


def all_reduce_mean(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Mean of a tensor over the processes (the tensor itself when not distributed)."""
    if not runtime.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / runtime.world_size


def cleanup(runtime: Runtime) -> None:
    """Leave the process group."""
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
