"""Device choice and optional data-parallel (DDP) setup from ``torchrun``'s environment.

Launched plainly, training runs in one process on CUDA if present, else CPU. Launched by
``torchrun`` (``WORLD_SIZE`` > 1 in the environment), each process joins a process group:
NCCL on GPUs, gloo on CPU. Only rank 0 logs, tracks and saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    """Where this process trains and its place in the process group."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def amp(self) -> bool:
        """Automatic mixed precision is used on CUDA only."""
        return self.device.type == "cuda"


def setup(force_cpu: bool = False) -> Runtime:
    """Choose the device and, under ``torchrun``, initialise the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not force_cpu
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            dist.init_process_group(backend, device_id=device)
        else:
            dist.init_process_group(backend)
    return Runtime(device=device, rank=rank, world_size=world_size, local_rank=local_rank)


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
