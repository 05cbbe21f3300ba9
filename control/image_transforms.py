"""Which augmentation steps a run may use: transforms that change the pixels or the geometry of one image.

albumentations also exports its base classes (DualTransform, ImageOnlyTransform, Transform3D, NoOp),
volume (3D) transforms, transforms that need bounding boxes or masks, spectrogram and text transforms,
and domain adaptation that needs reference images. None of them means anything for a classifier's
single image, so the builder does not offer them and the checks refuse them by name.
"""

from __future__ import annotations

import functools

# albumentations modules whose transforms are not single-image transforms (see the module docstring).
_OTHER_KINDS = {
    "albumentations.core.transforms_interface": "a base class of albumentations",
    "albumentations.augmentations.transforms3d.transforms": "a 3D (volume) transform",
    "albumentations.augmentations.spectrogram.transform": "a spectrogram transform",
    "albumentations.augmentations.text.transforms": "a text-rendering transform (needs text metadata)",
    "albumentations.augmentations.mixing.domain_adaptation": "domain adaptation (needs reference images)",
}
_NEEDS_TARGETS = {
    "AtLeastOneBBoxRandomCrop": "bounding boxes",
    "BBoxSafeRandomCrop": "bounding boxes",
    "RandomCropNearBBox": "bounding boxes",
    "RandomSizedBBoxSafeCrop": "bounding boxes",
    "CropNonEmptyMaskIfExists": "a mask",
    "MaskDropout": "a mask",
    "ConstrainedCoarseDropout": "a mask or bounding boxes",
}


def why_not_an_image_transform(name: str) -> str | None:
    """None for a single-image pixel or spatial transform, else why `name` is not one."""
    if name in _NEEDS_TARGETS:
        return f"{name} needs {_NEEDS_TARGETS[name]} besides the image; an image classifier has none"
    from engine.augment import registry

    if name in registry.REGISTRY and name != "NoOp":  # known single-image transforms: no import needed
        return None
    from engine.augment.composites import albumentations

    obj = getattr(albumentations(), name, None)
    kind = _OTHER_KINDS.get(getattr(obj, "__module__", ""))
    if kind is None and name.endswith("3D"):
        kind = "a 3D (volume) transform"
    return f"{name} is {kind}, not a transform of one image" if kind else None


@functools.cache
def image_transforms() -> list[str]:
    """The steps the builder offers: the common ones (with their builder defaults) first, then the rest."""
    from engine.augment import BUILDER_DEFAULTS, available_transforms

    names = list(BUILDER_DEFAULTS) + [t for t in available_transforms() if t not in BUILDER_DEFAULTS]
    return [n for n in names if why_not_an_image_transform(n) is None]


def step_errors(steps) -> list[tuple[str, str]]:
    """One error per training step that is not a single-image transform, at its field."""
    errors = []
    for i, step in enumerate(steps or []):
        name = step.get("name") if isinstance(step, dict) else getattr(step, "name", None)
        why = why_not_an_image_transform(str(name)) if name else None
        if why:
            errors.append((f"augment.train.{i}", why))
    return errors
