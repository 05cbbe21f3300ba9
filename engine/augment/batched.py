"""Batched augmentation pipelines for the GPU-resident fast path: each step's batched op, or why it has none.

Which transforms have an op, which of their params it reproduces, and how each op is built is declared
in `engine.augment.registry`; the ops themselves are in `engine.augment.ops`. A step is built from its
albumentations object (`engine.augment.pipeline.normalised_transform`), so albumentations validates and
normalises its params, and the op reads the normalised ranges off it. A step without an op, or with a
param value whose meaning its op does not reproduce, makes `why_not` return the reason; the run then
uses the albumentations CPU path and says why (engine.training.fastpath).

tests/test_batch_augment.py compares each op's `apply` with albumentations' own `apply` for the same
parameters, and its `sample` with albumentations' draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.augment import registry
from engine.augment.ops import BatchOp, Unsupported
from engine.augment.pipeline import STAND_IN_SIZE, normalised_transform, step_fields

__all__ = [
    "BatchOp",
    "BatchPipeline",
    "Unsupported",
    "build_batch_pipeline",
    "build_op",
    "preview",
    "supports",
    "why_not",
]


def build_op(name: str, params: dict[str, Any], p: float, image_shape: tuple | None = None) -> BatchOp:
    """One step -> its batched op. image_shape: (H, W) or (H, W, C) of the training images (None: not
    known yet; shape-dependent checks are skipped, and ops that need it use a placeholder).
    Raises Unsupported (a ValueError) with the reason when the step has no batched version."""
    entry = registry.get(name)
    if entry is None or entry.op is None:
        raise Unsupported(f"no batched version of {name}")
    extra = sorted(set(params) - entry.op_params)
    if extra:
        raise Unsupported(f"{name}: param {', '.join(extra)} has no batched version")
    shape = tuple(image_shape[:2]) if image_shape is not None else None
    channels = int(image_shape[2]) if image_shape is not None and len(image_shape) > 2 else None
    params = registry.with_output_size(name, params, *(shape or (STAND_IN_SIZE, STAND_IN_SIZE)))
    try:
        op = entry.op(normalised_transform(name, params), p, shape, channels)
    except Unsupported as exc:  # a composite's part: say which step it belongs to
        raise exc if str(exc).startswith(name) else Unsupported(f"{name}: {exc}") from None
    op.name = name
    return op


def why_not(name: str, params: dict[str, Any], image_shape: tuple | None = None) -> str | None:
    """None when the step has a batched version (for images of this shape), else the reason."""
    try:
        build_op(name, dict(params or {}), 1.0, image_shape)
    except Unsupported as exc:
        return str(exc)
    except (ValueError, TypeError) as exc:  # params albumentations itself refuses
        return f"{name}: {str(exc)[:200]}"
    return None


def supports(name: str, params: dict[str, Any]) -> bool:
    return why_not(name, params) is None


class BatchPipeline:
    """The batched counterpart of engine.augment.build_pipeline: ops applied in order."""

    def __init__(self, ops: list[BatchOp]):
        self.ops = ops

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        for op in self.ops:
            x = op(x, gen)
        return x

    @property
    def names(self) -> list[str]:
        return [op.name for op in self.ops]


def build_ops(steps, image_shape: tuple) -> tuple[list[BatchOp], list[str]]:
    """Every step's op, and the reasons of the steps that have none (empty when all have one)."""
    ops, reasons = [], []
    for step in steps or []:
        name, p, params = step_fields(step)
        try:
            ops.append(build_op(name, params, p, image_shape))
        except Unsupported as exc:
            reasons.append(str(exc))
        except (ValueError, TypeError) as exc:  # params albumentations itself refuses
            reasons.append(f"{name}: {str(exc)[:200]}")
    return ops, reasons


def build_batch_pipeline(steps, image_shape: tuple) -> BatchPipeline:
    """steps: AugmentStep objects or dicts (name, p, params). Raises Unsupported with the reason of the
    first step that has no batched version."""
    ops, reasons = build_ops(steps, image_shape)
    if reasons:
        raise Unsupported(reasons[0])
    return BatchPipeline(ops)


def preview(steps, images_uint8_nhwc: np.ndarray, seed: int) -> np.ndarray:
    """What the fast path makes of these images: the batched pipeline on CPU, seeded. uint8 NHWC in and out
    (N, H, W grey images are taken as one channel). Raises Unsupported when a step has no batched version."""
    x = np.asarray(images_uint8_nhwc)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"preview takes uint8 (N, H, W, C) images, got {x.dtype} {x.shape}")
    pipeline = build_batch_pipeline(steps, x.shape[1:])
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        out = pipeline(torch.from_numpy(np.ascontiguousarray(x)), gen)
    return out.numpy()
