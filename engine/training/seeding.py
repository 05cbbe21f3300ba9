"""Reproducibility: one seed for the run, and every epoch re-seeded from (seed, epoch), so a run resumed
from its last checkpoint draws exactly what the uninterrupted run would have drawn."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % 2**31


def seed_epoch(seed: int, epoch: int) -> None:
    """Python, numpy and torch generators at the start of 1-based `epoch`."""
    s = epoch_seed(seed, epoch)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
