"""Multi-GPU data parallelism under torchrun (DistributedDataParallel), and the 1-process no-op.

Every rank builds the same global batch (same per-epoch seed, so the same permutation and the same
augmentation) and trains on its slice of it; DDP averages gradients, so with SyncBatchNorm the
update equals the single-process one up to float rounding. Only rank 0 talks to the DB and writes
checkpoints; epoch metrics are summed across ranks before they are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, *tensors):
        """This rank's contiguous slice of a global batch."""
        if not self.enabled:
            return tensors
        out = []
        for t in tensors:
            per = len(t) // self.world
            out.append(t[self.rank * per : (self.rank + 1) * per])
        return tuple(out)

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        if not self.enabled:
            return list(values)
        packed = torch.stack([v.detach().double().reshape(()) for v in values])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return list(packed.unbind())

    def any(self, flag: bool, device) -> bool:
        """True on every rank if it is True on any (stop requests must be agreed on)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def world_from_env() -> Dist:
    return Dist(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU); returns this rank's device."""
    d = world_from_env()
    if not d.enabled:
        return d, device
    if device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def wrap(model: torch.nn.Module, d: Dist, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn and device.type == "cuda":  # SyncBatchNorm is CUDA-only; on CPU each rank keeps its own BN statistics
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
