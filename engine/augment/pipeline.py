"""Augmentation pipelines: an ordered list of albumentations transforms, by name, with params and p.

One definition serves the trainer's CPU path, the augmentation browser and random-pass TTA, so what
a user previews is what the model sees. Pipelines take and return uint8 HWC numpy images; scaling to
float and normalising happen on the batch (`engine.data.normalize_batch`), on CPU or GPU alike.

Any albumentations transform can be named and its parameters are checked against its signature and
its own schema. A few composite recipes that albumentations has no single class for (RandAugment,
pad-then-random-crop) are built by their entries in `engine.augment.registry`, which also says which
steps set the output size.
"""

from __future__ import annotations

import functools
import inspect
import json
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from engine.augment import registry
from engine.augment.composites import albumentations

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

# The transforms our users' recipes use, offered first in the builder with sensible params.
BUILDER_DEFAULTS: dict[str, dict[str, Any]] = registry.builder_defaults()
COMPOSITES: dict[str, Callable[..., Any]] = registry.composites_by_name()


def available_transforms() -> list[str]:
    """Every albumentations image transform usable as a step, plus our composites."""
    A = albumentations()
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
    A = albumentations()
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


@functools.lru_cache(maxsize=512)
def _normalised(name: str, params_json: str):
    return make_transform(name, json.loads(params_json), 1.0)


def plain_params(name: str, params: dict[str, Any]) -> SimpleNamespace | None:
    """The step's checked params as a stand-in for its albumentations object, when its registry entry
    can check them without albumentations (a flip, our own pad-and-crop); else None."""
    entry = registry.get(name)
    if entry is None or entry.plain is None or not isinstance(params, dict) or "p" in params:
        return None
    if not _safe_value(params):
        return None
    try:
        return SimpleNamespace(**entry.plain(**_tuplify(params)))
    except TypeError:  # a param it does not take: albumentations' own check names it
        return None


def normalised_transform(name: str, params: dict[str, Any]):
    """The step's albumentations object with its params validated and normalised, made once per distinct
    (name, params) and shared: read its attributes, never apply it (its random state is shared too).
    For a step the registry checks itself (`plain_params`), that stand-in: albumentations is not imported."""
    if (plain := plain_params(name, params)) is not None:
        return plain
    if not _safe_value(params):  # make_transform says why; only plain data can be a cache key
        return make_transform(name, params, 1.0)
    return _normalised(name, json.dumps(params, sort_keys=True))


STAND_IN_SIZE = 32  # validating a crop without a size before the training size is known


def check_transform(name: str, params: dict[str, Any]) -> None:
    if isinstance(params, dict):
        params = registry.with_output_size(name, params, STAND_IN_SIZE, STAND_IN_SIZE)
    normalised_transform(name, params)


def step_fields(step) -> tuple[str, float, dict[str, Any]]:
    """(name, p, params) of an AugmentStep or a plain dict."""
    if isinstance(step, dict):
        return step["name"], float(step.get("p", 0.5)), dict(step.get("params", {}))
    return step.name, float(step.p), dict(step.params)


def build_pipeline(steps, image_size: int | None = None):
    """steps: list of AugmentStep (or dicts with name/p/params) -> albumentations Compose or None.
    Each step's transform is made once here: a pipeline owns its transforms' random state."""
    if not steps:
        return None
    transforms = []
    for step in steps:
        name, p, params = step_fields(step)
        if image_size:
            params = registry.with_output_size(name, params, image_size, image_size)
        transforms.append(make_transform(name, params, p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return albumentations().Compose(transforms)


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
