"""Data-parallel plumbing: the process group under ``torchrun``, each rank's device, a resumable sampler.

One process (``m2s-train``) is the degenerate case of the same code: ``world_size`` 1, rank 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from m2s_perception.checkpoint import resolve_device


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: str, ddp: Distributed) -> torch.device:
    """``--device`` for this rank: "auto" resolved, plain "cuda" → this rank's GPU, made current."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: CUDA is not available on this machine")
        if resolved.index is None:
            resolved = torch.device("cuda", ddp.local_rank if ddp.enabled else torch.cuda.current_device())
        torch.cuda.set_device(resolved)
    return resolved


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) that can start mid-epoch after a resume."""

    start = 0  # samples of this rank's epoch already consumed

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
