"""Augmentation pipelines: an ordered list of albumentations transforms, by name, with params and p.

One definition serves the trainer's CPU path, the augmentation browser and random-pass TTA, so what
a user previews is what the model sees. Pipelines take and return uint8 HWC numpy images; scaling to
float and normalising happen on the batch (`engine.data.normalize_batch`), on CPU or GPU alike.

Any albumentations transform can be named and its parameters are checked against its signature and
its own schema. A few composite recipes that albumentations has no single class for (RandAugment,
pad-then-random-crop) are registered in COMPOSITES.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

# Transforms that are containers or change the sample layout; they are not pipeline steps.
_NOT_STEPS = {
    "Compose",
    "OneOf",
    "SomeOf",
    "Sequential",
    "OneOrOther",
    "SelectiveChannelTransform",
    "ReplayCompose",
    "BboxParams",
    "KeypointParams",
    "ToTensorV2",
    "Lambda",
    "TemplateTransform",
    "Normalize",
    "FromFloat",
    "ToFloat",
    "MixUp",
    "OverlayElements",
    "Mosaic",
}

# The transforms our users' reports use, offered first in the builder with sensible params.
BUILDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "HorizontalFlip": {},
    "VerticalFlip": {},
    "RandomRotate90": {},
    "PadRandomCrop": {"padding": 4},
    "RandomResizedCrop": {"scale": [0.8, 1.0]},
    "Affine": {"translate_percent": [-0.125, 0.125], "rotate": [-15, 15], "scale": [0.9, 1.1]},
    "ShiftScaleRotate": {"shift_limit": 0.0625, "scale_limit": 0.1, "rotate_limit": 15},
    "Rotate": {"limit": 15},
    "RandomBrightnessContrast": {"brightness_limit": 0.2, "contrast_limit": 0.2},
    "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05},
    "ToGray": {},
    "GaussianBlur": {"blur_limit": [3, 5]},
    "Solarize": {"threshold_range": [0.5, 0.5]},
    "CoarseDropout": {"num_holes_range": [1, 1], "hole_height_range": [0.25, 0.5], "hole_width_range": [0.25, 0.5]},
    "Erasing": {"scale": [0.02, 0.33]},
    "RandAugment": {"num_ops": 2, "magnitude": 9},
}


@functools.lru_cache(maxsize=1)
def _albumentations():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import albumentations as A
    return A


def available_transforms() -> list[str]:
    """Every albumentations image transform usable as a step, plus our composites."""
    A = _albumentations()
    names = []
    for name in dir(A):
        obj = getattr(A, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, A.BasicTransform)
            and name not in _NOT_STEPS
            and not name.startswith("_")
        ):
            if issubclass(obj, (A.ImageOnlyTransform, A.DualTransform)):
                names.append(name)
    return sorted(set(names) | set(COMPOSITES))


# ------------------------------------------------------------------------------- composites
def _pad_random_crop(padding: int = 4, fill: int = 0, p: float = 1.0, _size: int | None = None):
    """Pad by `padding` px each side, then crop back to the original size at a random place (CIFAR-style)."""
    if not isinstance(padding, int) or not 0 <= padding <= 256:
        raise ValueError("padding must be an integer between 0 and 256")
    A = _albumentations()

    class PadRandomCrop(A.ImageOnlyTransform):
        def __init__(self, padding, fill, p):
            super().__init__(p=p)
            self.padding, self.fill = padding, fill

        def apply(self, img, **params):
            h, w = img.shape[:2]
            pad = [(self.padding, self.padding), (self.padding, self.padding)] + [(0, 0)] * (img.ndim - 2)
            big = np.pad(img, pad, constant_values=self.fill)
            y, x = self.py_random.randint(0, 2 * self.padding), self.py_random.randint(0, 2 * self.padding)
            return np.ascontiguousarray(big[y : y + h, x : x + w])

    return PadRandomCrop(padding, fill, p)


def _rand_augment(num_ops: int = 2, magnitude: int = 9, p: float = 1.0, _size: int | None = None):
    """RandAugment (Cubuk et al.): apply `num_ops` ops picked uniformly, each at strength magnitude/30."""
    if not isinstance(num_ops, int) or not 1 <= num_ops <= 10:
        raise ValueError("num_ops must be an integer between 1 and 10")
    if not isinstance(magnitude, (int, float)) or not 0 <= magnitude <= 30:
        raise ValueError("magnitude must be between 0 and 30")
    A = _albumentations()
    m = magnitude / 30.0
    ops = [
        A.NoOp(),
        A.Affine(rotate=(-30 * m, 30 * m), p=1.0),
        A.Affine(shear={"x": (-17 * m, 17 * m), "y": (0, 0)}, p=1.0),
        A.Affine(shear={"x": (0, 0), "y": (-17 * m, 17 * m)}, p=1.0),
        A.Affine(translate_percent={"x": (-0.3 * m, 0.3 * m), "y": (0, 0)}, p=1.0),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.3 * m, 0.3 * m)}, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.9 * m, contrast_limit=0, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0, contrast_limit=0.9 * m, p=1.0),
        A.ColorJitter(brightness=0, contrast=0, saturation=0.9 * m, hue=0, p=1.0),
        A.Solarize(threshold_range=(1 - m, 1 - m), p=1.0),
        A.Posterize(num_bits=max(1, 8 - int(4 * m)), p=1.0),
        A.Equalize(p=1.0),
        A.AutoContrast(p=1.0),
        A.Sharpen(alpha=(0.1 * m, 0.9 * m), p=1.0),
    ]
    return A.SomeOf(ops, n=num_ops, replace=True, p=p)


COMPOSITES: dict[str, Callable[..., Any]] = {"PadRandomCrop": _pad_random_crop, "RandAugment": _rand_augment}


# ------------------------------------------------------------------------------- validation
def _safe_value(v, depth=0) -> bool:
    """Params are plain data: numbers, strings, bools, lists and dicts of them (never code)."""
    if depth > 4:
        return False
    if v is None or isinstance(v, (bool, int, float, str)):
        return not isinstance(v, float) or np.isfinite(v)
    if isinstance(v, (list, tuple)):
        return len(v) <= 64 and all(_safe_value(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return len(v) <= 64 and all(isinstance(k, str) and _safe_value(x, depth + 1) for k, x in v.items())
    return False


def _tuplify(v):
    # YAML/JSON give lists; albumentations wants tuples for ranges.
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuplify(x) for k, x in v.items()}
    return v


def signature_params(obj) -> set[str]:
    return {n for n, p in inspect.signature(obj).parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def make_transform(name: str, params: dict[str, Any], p: float):
    """Instantiate one step; raises ValueError with a user-facing message when it cannot."""
    if not isinstance(params, dict):
        raise ValueError("params must be a mapping")
    if not _safe_value(params):
        raise ValueError("params must be plain numbers, strings, booleans, lists or mappings")
    if "p" in params:
        raise ValueError("set the probability with the step's p, not in params")
    kwargs = _tuplify(params)
    if name in COMPOSITES:
        try:
            return COMPOSITES[name](**kwargs, p=p)
        except TypeError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if name == "Normalize":
        raise ValueError("Normalize is set by data.normalize (dataset mean/std, imagenet or none), not as a step")
    A = _albumentations()
    cls = getattr(A, name, None)
    if name.startswith("_") or not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)) or name in _NOT_STEPS:
        raise ValueError(f"unknown transform '{name}'")
    allowed = signature_params(cls.__init__) - {"self", "p", "always_apply"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"{name} has no parameter {', '.join(unknown)} (it takes: {', '.join(sorted(allowed)) or 'none'})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**kwargs, p=p)
    except Exception as exc:  # albumentations' pydantic schema or its own checks
        raise ValueError(f"{name}: {_schema_message(exc)[:400]}") from None


def _schema_message(exc: Exception) -> str:
    """One readable line per offending parameter from albumentations' pydantic InitSchema errors."""
    source = exc.__cause__ if exc.__cause__ is not None else exc  # albumentations re-raises as ValueError
    errors = getattr(source, "errors", None)
    if callable(errors):
        try:
            by_param: dict[str, str] = {}
            for err in errors():
                param = str(err["loc"][0]) if err.get("loc") else "params"
                by_param.setdefault(param, err["msg"].removeprefix("Value error, "))
            return "; ".join(f"{k}: {v}" for k, v in by_param.items())
        except Exception:  # not a pydantic error after all
            pass
    lines = [line.strip() for line in str(exc).split("\n") if line.strip()]
    return " ".join(lines[:6])


def check_transform(name: str, params: dict[str, Any]) -> None:
    if isinstance(params, dict):
        # build_pipeline fills a crop's output size with the training size; validate with a stand-in
        # size when it is left out, so {"scale": [0.8, 1.0]} (BUILDER_DEFAULTS) is a valid step.
        params = dict(params)
        if name == "RandomResizedCrop" and "size" not in params:
            params["size"] = [32, 32]
        if name in ("RandomCrop", "CenterCrop", "Resize") and "height" not in params and "width" not in params:
            params.update(height=32, width=32)
    make_transform(name, params, p=1.0)


def build_pipeline(steps, image_size: int | None = None):
    """steps: list of AugmentStep (or dicts with name/p/params) -> albumentations Compose or None."""
    if not steps:
        return None
    A = _albumentations()
    transforms = []
    for step in steps:
        if isinstance(step, dict):
            name, p, params = step["name"], step.get("p", 0.5), dict(step.get("params", {}))
        else:
            name, p, params = step.name, step.p, dict(step.params)
        if name in ("RandomResizedCrop", "RandomCrop", "CenterCrop", "Resize", "RandomSizedCrop") and image_size:
            # Crops must give back the training size; fill it in so users need not repeat it.
            if name == "RandomResizedCrop" and "size" not in params:
                params["size"] = [image_size, image_size]
            if name in ("RandomCrop", "CenterCrop", "Resize") and "height" not in params:
                params.update(height=image_size, width=image_size)
        transforms.append(make_transform(name, params, p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return A.Compose(transforms)


def apply_pipeline(pipeline, image: np.ndarray) -> np.ndarray:
    """uint8 HW or HWC in, uint8 HWC out (same size), whatever the pipeline does to dtype/shape."""
    if pipeline is None:
        out = image
    else:
        out = pipeline(image=image)["image"]
    if out.dtype != np.uint8:
        out = np.clip(out * (255.0 if out.dtype.kind == "f" and out.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def seed_pipeline(pipeline, seed: int) -> None:
    """albumentations 2.x keeps its own RNG; seed it so runs and resumes are reproducible."""
    if pipeline is not None and hasattr(pipeline, "set_random_seed"):
        pipeline.set_random_seed(seed)
