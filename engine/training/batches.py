"""Training batches for one epoch: the GPU-resident fast path when it applies, else the CPU path."""

from __future__ import annotations

import random

import numpy as np
import torch

from engine.augment import seed_pipeline
from engine.config import ExperimentConfig
from engine.data import Splits
from engine.training.seeding import epoch_seed


def batches_in_memory(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int, drop_last: bool):
    n = len(y)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def make_train_batches(cfg: ExperimentConfig, splits: Splits, pipeline, epoch: int, device):
    """(uint8 NHWC, int64 labels) batches for one epoch. Which path runs, and why, is
    `fastpath.plan(...).describe()`, recorded once per run.

    The GPU-resident fast path (engine.training.fastpath) is used when it applies; otherwise the CPU path:
    per-image albumentations in a DataLoader (workers, pinned memory), or plain array slicing
    when there is no augmentation at all.
    """
    from engine.training import fastpath

    seed = epoch_seed(cfg.train.seed, epoch)
    drop_last = len(splits.train_y) > cfg.train.batch_size
    fast = fastpath.plan(cfg, splits, device)
    if fast.usable:
        return fast.batches(epoch, seed)
    if pipeline is None:
        return batches_in_memory(splits.train_x, splits.train_y, cfg.train.batch_size, True, seed, drop_last)
    from torch.utils.data import DataLoader

    from engine.data import AugmentedArrays

    seed_pipeline(pipeline, seed)
    workers = cfg.train.num_workers
    loader = DataLoader(
        AugmentedArrays(splits.train_x, splits.train_y, pipeline),
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker if workers else None,
    )
    return iter(loader)


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**31
    random.seed(s)
    np.random.seed(s)
    info = torch.utils.data.get_worker_info()
    seed_pipeline(info.dataset.pipeline, s)
