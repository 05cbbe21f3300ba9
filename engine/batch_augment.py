"""Batched augmentation on uint8 NHWC tensors (CPU or GPU), with per-sample random parameters.

Each entry gives the same meaning to a transform as its albumentations namesake (engine.augment):
same parameters, same probability semantics (each sample is transformed with probability p).
tests/test_batch_augment.py checks each against albumentations.
"""
from __future__ import annotations

from typing import Callable

import torch

BatchFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _chance(n: int, p: float, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(n,) bool: which samples get the transform."""
    return torch.rand(n, device=x.device, generator=gen) < p


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


def hflip(p: float) -> BatchFn:
    return lambda x, g: _where(_chance(len(x), p, x, g), x.flip(2), x)


def vflip(p: float) -> BatchFn:
    return lambda x, g: _where(_chance(len(x), p, x, g), x.flip(1), x)


def pad_random_crop(p: float, padding: int = 4, fill: int = 0) -> BatchFn:
    """Pad by `padding` and crop back at a random offset, per sample, via one gather."""
    def fn(x, g):
        n, h, w, c = x.shape
        big = torch.nn.functional.pad(x, (0, 0, padding, padding, padding, padding), value=fill)
        dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=g)
        dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=g)
        keep = ~_chance(n, p, x, g)
        dy = torch.where(keep, torch.full_like(dy, padding), dy)
        dx = torch.where(keep, torch.full_like(dx, padding), dx)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h))  # (n, h)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w))  # (n, w)
        bidx = torch.arange(n, device=x.device).view(n, 1, 1)
        return big[bidx, rows.view(n, h, 1), cols.view(n, 1, w)]
    return fn


# name -> (builder(p, **params) -> BatchFn, allowed params)
REGISTRY: dict[str, tuple[Callable[..., BatchFn], set[str]]] = {
    "HorizontalFlip": (hflip, set()),
    "VerticalFlip": (vflip, set()),
    "PadRandomCrop": (pad_random_crop, {"padding", "fill"}),
}


def supports(name: str, params: dict) -> bool:
    entry = REGISTRY.get(name)
    return entry is not None and set(params) <= entry[1]


def make_step(step, image_size: int | None = None) -> BatchFn:
    builder, _ = REGISTRY[step.name]
    return builder(step.p, **step.params)
