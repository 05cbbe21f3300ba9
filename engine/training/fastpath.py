"""Fast data path: the whole training split as a uint8 tensor on the device, shuffled by a per-epoch
permutation, augmented in batches with per-sample random parameters (airbench-style). No DataLoader,
no worker processes, no per-image Python: one gather and a few tensor ops per batch, all queued on
the device's stream, so the GPU never waits for the host.

Used when every augmentation step has a batched op (engine.augment.registry says which do; Mixup/CutMix run on
the device in engine.training.loop either way); otherwise the run falls back to the albumentations CPU path.
`plan(...).describe()` is what the run's log and its DB row (`runs.data_path`) say about which path
ran and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.augment import batched as batch_augment

# Put the training split on the GPU only when it takes at most this share of the card's memory: the
# model, its activations and the optimizer state need the rest.
MAX_GPU_SHARE = 0.5
DATA_PATH_MAX_CHARS = 200  # runs.data_path is a String(200)


@dataclass
class FastPath:
    usable: bool
    reason: str
    cfg: object = None
    splits: object = None
    device: torch.device | None = None
    pipeline: batch_augment.BatchPipeline | None = None
    _x: torch.Tensor | None = field(default=None, repr=False)
    _y: torch.Tensor | None = field(default=None, repr=False)

    def describe(self) -> str:
        """One line for the log and the DB: which data path runs, and why."""
        if not self.usable:
            return f"cpu: {self.reason}"[:DATA_PATH_MAX_CHARS]
        where = "GPU" if self.device is not None and self.device.type == "cuda" else "CPU"
        x = self.splits.train_x
        steps = ", ".join(self.pipeline.names) if self.pipeline and self.pipeline.names else "no augmentation"
        text = f"fast: {where}-resident uint8 tensors ({len(x)} images, {x.nbytes / 1e6:.0f} MB), batched: {steps}"
        if len(text) > DATA_PATH_MAX_CHARS:
            text = text[: DATA_PATH_MAX_CHARS - 3] + "..."
        return text

    def load(self) -> None:
        """Copy the training split to the device once per run."""
        if self._x is None:
            self._x = torch.from_numpy(self.splits.train_x).to(self.device)
            self._y = torch.from_numpy(self.splits.train_y).to(self.device)

    def batches(self, epoch: int, seed: int):
        """(uint8 NHWC, int64 labels) batches on the device for one epoch.

        Every batch has batch_size samples (the remainder is dropped, as the CPU path's drop_last does),
        so shapes are static: cudnn.benchmark picks its kernels once and torch.compile never recompiles.
        The permutation and every augmentation draw come from one generator seeded by (seed, epoch):
        a resumed run repeats the epoch exactly."""
        self.load()
        x, y = self._x, self._y
        bs = self.cfg.train.batch_size
        n = len(y)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        order = torch.randperm(n, device=self.device, generator=gen)
        stop = n - n % bs if n > bs else n
        for i in range(0, stop, bs):
            idx = order[i : i + bs]
            yield self.pipeline(x[idx], gen), y[idx]


_CACHE: dict[tuple, FastPath] = {}


def plan(cfg, splits, device) -> FastPath:
    """Decide (once per run) whether the fast path applies, and why not when it does not."""
    key = (id(cfg), id(splits), str(device))
    cached = _CACHE.get(key)
    if cached is not None and cached.cfg is cfg and cached.splits is splits:
        return cached
    fp = _decide(cfg, splits, torch.device(device))
    _CACHE.clear()  # one run per process at a time: keep only the current plan (and its device tensors)
    _CACHE[key] = fp
    return fp


def _decide(cfg, splits, device: torch.device) -> FastPath:
    def fallback(reason: str) -> FastPath:
        return FastPath(False, reason, cfg, splits, device)

    if cfg.augment.fast_path == "off":
        return fallback("fast path turned off in the config (augment.fast_path: off)")
    ops, reasons = batch_augment.build_ops(cfg.augment.train, tuple(splits.train_x.shape[1:]))
    if reasons:
        return fallback("; ".join(reasons))
    if device.type == "cuda":
        needed = splits.train_x.nbytes
        total = torch.cuda.get_device_properties(device).total_memory
        if needed > MAX_GPU_SHARE * total:
            return fallback(
                f"training split ({needed / 1e9:.1f} GB) is more than {MAX_GPU_SHARE:.0%} of GPU memory "
                f"({total / 1e9:.0f} GB)"
            )
    pipeline = batch_augment.BatchPipeline(ops)
    return FastPath(True, "every augmentation step has a batched version", cfg, splits, device, pipeline)


def release() -> None:
    """Drop the cached plan and its device tensors (long-lived processes running several trainings)."""
    _CACHE.clear()
