"""Fast data path: the whole training split as a uint8 tensor on the device, shuffled by a per-epoch
permutation, augmented in batches with per-sample random parameters (airbench-style). No DataLoader.

Used when every augmentation step has a batched version in engine.batch_augment (and mixup runs on
the device anyway); otherwise the run falls back to the albumentations CPU path and says why.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import batch_augment


@dataclass
class FastPath:
    usable: bool
    reason: str
    cfg: object = None
    splits: object = None
    device: torch.device | None = None
    _x: torch.Tensor | None = None
    _y: torch.Tensor | None = None

    def describe(self) -> str:
        if self.usable:
            where = "GPU" if self.device is not None and self.device.type == "cuda" else "CPU"
            return f"fast: {where}-resident uint8 tensors, batched augmentation"
        return f"cpu: {self.reason}"

    def batches(self, epoch: int, seed: int):
        if self._x is None:
            self._x = torch.from_numpy(self.splits.train_x).to(self.device)
            self._y = torch.from_numpy(self.splits.train_y).to(self.device)
        x, y = self._x, self._y
        bs = self.cfg.train.batch_size
        n = len(y)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        order = torch.randperm(n, device=self.device, generator=gen)
        stop = n - n % bs if n > bs else n
        steps = [batch_augment.make_step(s, self.splits.image_size) for s in self.cfg.augment.train]
        for i in range(0, stop, bs):
            idx = order[i:i + bs]
            xb = x[idx]
            for step in steps:
                xb = step(xb, gen)
            yield xb, y[idx]


_CACHE: dict[tuple, FastPath] = {}


def plan(cfg, splits, device) -> FastPath:
    """Decide (once per run) whether the fast path applies."""
    key = (id(cfg), id(splits), str(device))
    if key in _CACHE:
        return _CACHE[key]
    if cfg.augment.fast_path == "off":
        fp = FastPath(False, "fast path turned off in the config")
    else:
        missing = [s.name for s in cfg.augment.train if not batch_augment.supports(s.name, s.params)]
        bytes_needed = splits.train_x.nbytes
        if missing:
            fp = FastPath(False, f"no batched version of {', '.join(missing)}")
        elif device.type == "cuda" and bytes_needed > 0.5 * torch.cuda.get_device_properties(device).total_memory:
            fp = FastPath(False, f"training split ({bytes_needed / 1e9:.1f} GB) does not fit comfortably in GPU memory")
        else:
            fp = FastPath(True, "", cfg, splits, device)
    _CACHE.clear()  # one run per process: keep only the current plan
    _CACHE[key] = fp
    return fp
