"""Augmentation: albumentations pipelines by name (pipeline) and their batched tensor versions for
the GPU-resident fast path (batched)."""

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
