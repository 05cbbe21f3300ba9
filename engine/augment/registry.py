"""The transform registry: every fact about a transform we know more about than its albumentations name,
declared once, in one `Transform` entry, and read by every consumer: the CPU pipeline
(`engine.augment.pipeline`), the fast path's batched ops and its supports/why-not decision
(`engine.augment.batched`, `engine.training.fastpath`), the augmentation browser and the builder's
transform list (through `engine.augment`), and the TTA views (`engine.training.evaluate`).

A transform without an entry still works on the CPU path by its albumentations name (checked against
its signature and schema); it just has no batched op, no builder defaults and no TTA views.

How to add a transform:
- CPU only, with builder defaults: add `Transform("Name", defaults={...})` to ENTRIES (the order of
  ENTRIES is the builder's order). A recipe albumentations has no class for gets `build=` (a function
  of its params and p returning an albumentations transform, see `engine.augment.composites`).
- a crop or resize whose output size follows the training size: `output_size=` maps (H, W) to the
  params that set it; the size is then filled in when the step leaves it out.
- batched (fast path): write the op in `engine.augment.ops` (a BatchOp with `build(t, p, shape,
  channels)`, `_sample`, `_transform`), then give the entry `op=` that build, `op_params=` the
  albumentations params the op reproduces (any other param sends the run to the CPU path, saying so)
  and `parity=`: PIXEL_EXACT when the op gives albumentations' pixels for every draw, STATISTICAL when
  it gives them for the same parameters and draws the parameters from albumentations' distributions
  (KS-tested). Add its parity tests to tests/test_batch_augment.py (OUTPUT_STATS at least; a test
  fails for an op without one). A composite that is a SomeOf of transforms which all have ops gets
  `op=_some_of` (RandAugment does): its batched op is built from the composite's own parts.
- a symmetry usable for test-time augmentation: `views=` maps (H, W) to the deterministic views (uint8
  NHWC -> uint8 NHWC) whose mean the TTA variants in `engine.training.evaluate` take.
- a batched op that reads only params we can check ourselves (a flip, our pad-and-crop): `plain=` a
  function of those params returning them checked; config validation and the fast path then do not
  import albumentations for that step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.augment import composites, ops

PIXEL_EXACT = "pixel-exact"  # albumentations' pixels for every draw, and its draw distribution
STATISTICAL = "statistical"  # albumentations' pixels for the same params; params drawn from its distributions


@dataclass(frozen=True)
class Transform:
    name: str
    defaults: dict[str, Any] | None = None  # offered first in the builder with these params
    build: Callable[..., Any] | None = None  # composite: (**params, p) -> albumentations transform
    op: Callable[..., ops.BatchOp] | None = None  # batched: (albumentations object, p, shape, channels) -> op
    op_params: frozenset[str] = frozenset()  # params the batched op reproduces
    parity: str | None = None  # PIXEL_EXACT or STATISTICAL, for a batched op
    output_size: Callable[[int, int], dict[str, Any]] | None = None  # (H, W) -> the params setting the size
    views: Callable[[int, int], list[Callable]] | None = None  # (H, W) -> deterministic TTA views
    # (**params) -> the params the op reads, checked without albumentations (a flip, our own pad-and-crop):
    # config validation and the fast path then never import it; an unknown param (TypeError) goes to it.
    plain: Callable[..., dict[str, Any]] | None = None


def _size(h: int, w: int) -> dict[str, Any]:
    return {"size": [h, w]}


def _height_width(h: int, w: int) -> dict[str, Any]:
    return {"height": h, "width": w}


def _rotations(h: int, w: int) -> list[Callable]:
    """Rotations by 90/270 degrees need square images; on others only 0 and 180 keep the shape."""
    return [ops.rot90(k) for k in (range(4) if h == w else (0, 2))]


def _crops(h: int, w: int) -> list[Callable]:
    """Centre + 4 corners of the image padded by 1/8 (replicated edges)."""
    pad = max(1, min(h, w) // 8)
    return [
        ops.pad_crop(dy, dx, pad) for dy, dx in ((pad, pad), (0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad))
    ]


def _some_of(t, p: float, shape, channels) -> ops.SomeOf:
    """A composite's batched op built from its own albumentations ops (RandAugment's op set and magnitudes):
    one place says what RandAugment is, and the fast path reads it."""
    if not t.replace:
        raise ops.Unsupported("SomeOf without replacement has no batched version")
    sub_ops = []
    for sub in t.transforms:
        entry = REGISTRY.get(type(sub).__name__)
        if entry is None or entry.op is None:
            raise ops.Unsupported(f"no batched version of {type(sub).__name__}")
        sub_ops.append(entry.op(sub, sub.p, shape, channels))
    return ops.SomeOf(p, sub_ops, t.n)


# mask_* / fill_mask / rotate_method only concern masks and boxes, which classification never has.
_WARP = {"interpolation", "mask_interpolation", "border_mode", "fill", "fill_mask", "rotate_method"}

ENTRIES: tuple[Transform, ...] = (
    Transform(
        "HorizontalFlip",
        {},
        op=ops.HorizontalFlip.build,
        parity=PIXEL_EXACT,
        views=lambda h, w: [ops.identity, ops.hflip],
        plain=composites.no_params,
    ),
    Transform(
        "VerticalFlip",
        {},
        op=ops.VerticalFlip.build,
        parity=PIXEL_EXACT,
        views=lambda h, w: [ops.identity, ops.vflip],
        plain=composites.no_params,
    ),
    Transform(
        "RandomRotate90",
        {},
        op=ops.RandomRotate90.build,
        parity=PIXEL_EXACT,
        views=_rotations,
        plain=composites.no_params,
    ),
    Transform(
        "PadRandomCrop",
        {"padding": 4},
        build=composites.pad_random_crop,
        op=ops.PadRandomCrop.build,
        op_params=frozenset({"padding", "fill"}),
        parity=PIXEL_EXACT,
        views=_crops,
        plain=composites.pad_random_crop_params,
    ),
    Transform(
        "RandomResizedCrop",
        {"scale": [0.8, 1.0]},
        op=ops.RandomResizedCrop.build,
        op_params=frozenset({"size", "scale", "ratio", "interpolation", "mask_interpolation", "area_for_downscale"}),
        parity=STATISTICAL,
        output_size=_size,
    ),
    Transform(
        "Affine",
        {"translate_percent": [-0.125, 0.125], "rotate": [-15, 15], "scale": [0.9, 1.1]},
        op=ops.AffineWarp.build,
        op_params=frozenset(
            {"scale", "translate_percent", "translate_px", "rotate", "shear", "fit_output", "keep_ratio"}
            | {"balanced_scale"}
            | _WARP
        ),
        parity=STATISTICAL,
    ),
    Transform(
        "ShiftScaleRotate",
        {"shift_limit": 0.0625, "scale_limit": 0.1, "rotate_limit": 15},
        op=ops.AffineWarp.build,
        op_params=frozenset({"shift_limit", "scale_limit", "rotate_limit", "shift_limit_x", "shift_limit_y"} | _WARP),
        parity=STATISTICAL,
    ),
    Transform(
        "Rotate",
        {"limit": 15},
        op=ops.AffineWarp.build_rotate,
        op_params=frozenset({"limit", "crop_border"} | _WARP),
        parity=STATISTICAL,
    ),
    Transform(
        "RandomBrightnessContrast",
        {"brightness_limit": 0.2, "contrast_limit": 0.2},
        op=ops.RandomBrightnessContrast.build,
        op_params=frozenset({"brightness_limit", "contrast_limit", "brightness_by_max", "ensure_safe_range"}),
        parity=STATISTICAL,
    ),
    Transform(
        "ColorJitter",
        {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05},
        op=ops.ColorJitter.build,
        op_params=frozenset({"brightness", "contrast", "saturation", "hue"}),
        parity=STATISTICAL,
    ),
    Transform(
        "ToGray",
        {},
        op=ops.ToGray.build,
        op_params=frozenset({"num_output_channels", "method"}),
        parity=PIXEL_EXACT,
    ),
    Transform(
        "GaussianBlur",
        {"blur_limit": [3, 5]},
        op=ops.GaussianBlur.build,
        op_params=frozenset({"blur_limit", "sigma_limit"}),
        parity=STATISTICAL,
    ),
    Transform(
        "Solarize",
        {"threshold_range": [0.5, 0.5]},
        op=ops.Solarize.build,
        op_params=frozenset({"threshold_range"}),
        parity=STATISTICAL,
    ),
    Transform(
        "CoarseDropout",
        {"num_holes_range": [1, 1], "hole_height_range": [0.25, 0.5], "hole_width_range": [0.25, 0.5]},
        op=ops.CoarseDropout.build,
        op_params=frozenset({"num_holes_range", "hole_height_range", "hole_width_range", "fill", "fill_mask"}),
        parity=STATISTICAL,
    ),
    Transform(
        "Erasing",
        {"scale": [0.02, 0.33]},
        op=ops.Erasing.build,
        op_params=frozenset({"scale", "ratio", "fill", "fill_mask"}),
        parity=STATISTICAL,
    ),
    Transform(
        "RandAugment",
        {"num_ops": 2, "magnitude": 9},
        build=composites.rand_augment,
        op=_some_of,
        op_params=frozenset({"num_ops", "magnitude"}),
        parity=STATISTICAL,
    ),
    Transform("RandomGamma", op=ops.RandomGamma.build, op_params=frozenset({"gamma_limit"}), parity=STATISTICAL),
    Transform("NoOp", op=ops.NoOp.build, parity=PIXEL_EXACT, plain=composites.no_params),
    Transform("Posterize", op=ops.Posterize.build, op_params=frozenset({"num_bits"}), parity=STATISTICAL),
    Transform("Equalize", op=ops.Equalize.build, op_params=frozenset({"mode", "by_channels"}), parity=PIXEL_EXACT),
    Transform(
        "AutoContrast",
        op=ops.AutoContrast.build,
        op_params=frozenset({"cutoff", "ignore", "method"}),
        parity=PIXEL_EXACT,
    ),
    Transform(
        "Sharpen", op=ops.Sharpen.build, op_params=frozenset({"alpha", "lightness", "method"}), parity=STATISTICAL
    ),
    Transform("RandomCrop", output_size=_height_width),
    Transform("CenterCrop", output_size=_height_width),
    Transform("Resize", output_size=_height_width),
    Transform("RandomSizedCrop", output_size=_size),
)

REGISTRY: dict[str, Transform] = {t.name: t for t in ENTRIES}


def get(name: str) -> Transform | None:
    return REGISTRY.get(name)


def builder_defaults() -> dict[str, dict[str, Any]]:
    """The transforms offered first in the builder, in order, with their starting params."""
    return {t.name: dict(t.defaults) for t in ENTRIES if t.defaults is not None}


def composites_by_name() -> dict[str, Callable[..., Any]]:
    return {t.name: t.build for t in ENTRIES if t.build is not None}


def with_output_size(name: str, params: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """The crop-size rule: a step that sets the output size but leaves it out gets (height, width)."""
    entry = REGISTRY.get(name)
    if entry is None or entry.output_size is None:
        return params
    size = entry.output_size(height, width)
    return params if set(size) & set(params) else {**params, **size}


def tta_views(names: tuple[str, ...], height: int, width: int) -> list[Callable]:
    """The views of the named symmetries composed (the last name's view applied first)."""
    views: list[Callable] = [ops.identity]
    for name in names:
        entry = REGISTRY.get(name)
        if entry is None or entry.views is None:
            raise ValueError(f"{name} has no test-time augmentation views")
        views = [_then(outer, inner) for outer in views for inner in entry.views(height, width)]
    return views


def _then(outer: Callable, inner: Callable) -> Callable:
    if outer is ops.identity or inner is ops.identity:
        return inner if outer is ops.identity else outer
    return lambda x: outer(inner(x))
