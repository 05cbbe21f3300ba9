"""Augmentation: albumentations pipelines by name (pipeline), their batched tensor versions for the
GPU-resident fast path (batched, with the ops in ops), and the one table saying what we know about each
transform (registry: builder defaults, composites, output size, batched op and its parity, TTA views)."""

from engine.augment.pipeline import (
    BUILDER_DEFAULTS,
    apply_pipeline,
    available_transforms,
    build_pipeline,
    check_transform,
    make_transform,
    seed_pipeline,
)

__all__ = [
    "BUILDER_DEFAULTS",
    "apply_pipeline",
    "available_transforms",
    "build_pipeline",
    "check_transform",
    "make_transform",
    "seed_pipeline",
]
