"""The augmentation browser's logic: what a pipeline does to real images, computed by the engine's own code.

Nothing here re-implements an augmentation. The per-image pipeline is `engine.augment.build_pipeline`
seeded with `seed_pipeline` and applied with `apply_pipeline`, image by image, exactly as the CPU
training path's `engine.data.AugmentedArrays` does; Mixup/CutMix is the engine's own `timm.data.Mixup`
(built by `engine.training.loop._mixup`); the fast-path view is `engine.augment.batched.preview`, shown
when `engine.augment.batched.why_not` finds a batched op for every step (as the fast path decides).
Images are prepared like the engine's splits (`engine.data.adapt_images`: resize, grey/colour).

No Streamlit here: the page lays out what these functions return.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dashboard.aug_params import fit_params
from engine.augment import apply_pipeline, build_pipeline, seed_pipeline
from engine.data import ImageArrays, adapt_images

DEFAULT_AUGMENT = {
    "train": [
        {"name": "HorizontalFlip", "p": 0.5, "params": {}},
        {"name": "PadRandomCrop", "p": 1.0, "params": {"padding": 4}},
    ],
    "mixup": {"mixup_alpha": 0.0, "cutmix_alpha": 0.0},
}


def default_augment(image_side: int | None) -> dict:
    """A first pipeline to edit that fits the images (dashboard.aug_params.fit_params, the builder's rule
    too): pad-and-crop by at most an eighth of the side (4 px of a 32 px image, 1 px of an 8 px digit: a
    4 px shift would push most of a digit out of its frame), no crop larger than the image."""
    if not image_side:
        return DEFAULT_AUGMENT
    train = [
        {**step, "params": fit_params(step["name"], step["params"], image_side)} for step in DEFAULT_AUGMENT["train"]
    ]
    return {**DEFAULT_AUGMENT, "train": train}


# ------------------------------------------------------------------------------- pipelines
def sections_of(config: dict | None) -> tuple[dict, dict]:
    """A (possibly partial) experiment config -> its (augment, data) sections as plain dicts."""
    config = config or {}
    return dict(config.get("augment") or {}), dict(config.get("data") or {})


def parse_augment(section: dict):
    """Validate an `augment` section with the engine's schema -> AugmentConfig, else ConfigError per field."""
    from pydantic import ValidationError

    from engine.config import AugmentConfig, ConfigError, errors_from_validation

    if not isinstance(section, dict):
        raise ConfigError([("augment", "must be a mapping with 'train' steps (and optionally 'mixup')")])
    try:
        return AugmentConfig.model_validate(section)
    except ValidationError as exc:
        raise ConfigError([(f"augment.{loc}", msg) for loc, msg in errors_from_validation(exc)]) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError([("augment", str(exc)[:500])]) from None


def parse_augment_yaml(text: str):
    """The page's editor: YAML of an augment section -> AugmentConfig, else ConfigError."""
    import yaml

    from engine.config import ConfigError, load_yaml_strict

    try:
        data = load_yaml_strict(text) or {}  # a key given twice or nesting too deep: one line each
    except yaml.YAMLError as exc:
        raise ConfigError([("augment", f"not valid YAML: {str(exc).splitlines()[0]}")]) from None
    except ConfigError as exc:
        raise ConfigError([("augment", msg) for _, msg in exc.errors]) from None
    return parse_augment(data)


def augment_yaml(section: dict) -> str:
    import yaml

    return yaml.safe_dump(section, sort_keys=False)


# ------------------------------------------------------------------------------- images
def pick_images(data: ImageArrays, k: int, seed: int = 0) -> np.ndarray:
    """Indices of k training images, one class after another (so the grid shows different classes)."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(data.train_y == c) for c in range(data.num_classes)]
    by_class = [idx[rng.permutation(len(idx))] for idx in by_class if len(idx)]
    picked = []
    for i in range(k):
        idx = by_class[i % len(by_class)]
        j = i // len(by_class)
        if j < len(idx):
            picked.append(int(idx[j]))
    return np.asarray(picked, dtype=np.int64)


def prepare_images(data: ImageArrays, indices: np.ndarray, data_section: dict | None = None) -> np.ndarray:
    """uint8 NHWC as the engine trains on them: resized to data.image_size, grey/colour per data.channels."""
    data_section = data_section or {}
    return adapt_images(data.train_x[indices], data_section.get("image_size"), data_section.get("channels", "auto"))


# ------------------------------------------------------------------------------- augmenting
def augment_grid(images: np.ndarray, steps, n: int, seed: int) -> np.ndarray:
    """(n, k, H, W, C) uint8: n augmented versions of each of the k images.

    One pipeline, seeded once, applied image by image and pass after pass: the order in which the
    engine's CPU path (AugmentedArrays over a seeded pipeline) draws its random numbers.
    """
    pipeline = build_pipeline(steps, int(images.shape[1]))
    seed_pipeline(pipeline, seed)
    return np.stack([np.stack([apply_pipeline(pipeline, img) for img in images]) for _ in range(n)])


def preview_grid(data: ImageArrays, steps, data_section: dict | None, k: int, n: int, seed: int):
    """The builder's inline preview: k training images (one class after another) as trained (resize,
    channels), n augmented versions of each, and their class names -> (images, (n, k) grid, names)."""
    indices = pick_images(data, k, seed)
    images = prepare_images(data, indices, data_section)
    names = [str(data.class_names[int(c)]) for c in data.train_y[indices]]
    return images, augment_grid(images, steps, n, seed), names


def fast_path_support(steps, image_shape: tuple | None = None) -> tuple[bool, str]:
    """Whether the batched (GPU) path can run these steps on images of this (H, W, C) shape, and why not:
    the fast path's own decision."""
    try:
        from engine.augment import batched as batch_augment
    except Exception as exc:  # torch missing or the module broken: say so, never crash the page
        return False, f"engine.augment.batched is not importable ({type(exc).__name__})"
    reasons = [r for r in (batch_augment.why_not(s.name, dict(s.params), image_shape) for s in steps) if r]
    if reasons:
        return False, f"{'; '.join(reasons)}: the engine uses the CPU path for this pipeline"
    return True, "every step has a batched version"


def fast_path_grid(images: np.ndarray, steps, n: int, seed: int) -> np.ndarray:
    """(n, k, H, W, C) uint8 from the fast path's own batched code (engine.augment.batched.preview)."""
    from engine.augment import batched as batch_augment

    k = len(images)
    tiled = np.ascontiguousarray(np.concatenate([images] * n))  # n passes over the same k images, one batch
    out = np.asarray(batch_augment.preview(list(steps), tiled, seed))
    return out.reshape(n, k, *out.shape[1:])


def mixup_preview(images: np.ndarray, labels: np.ndarray, num_classes: int, mixup: dict, seed: int):
    """Mix a small batch with the engine's timm Mixup -> (mixed uint8 NHWC, soft targets (B, C), lam).

    The engine mixes normalised float batches; normalising is per-channel affine, so mixing [0, 1]
    pixels and mapping back gives the same picture. timm draws lam and the CutMix box from numpy's
    global RNG: seeded here, and the caller's RNG state is put back afterwards.
    """
    import torch

    from engine.config import MixupConfig
    from engine.training.loop import _mixup

    cfg = MixupConfig(**mixup)
    if not cfg.enabled:
        raise ValueError("set mixup_alpha or cutmix_alpha above 0 (and prob above 0) to preview Mixup/CutMix")
    if len(images) < 2 or len(images) % 2:
        raise ValueError("Mixup needs an even batch of at least two images (the engine skips odd batches)")
    mixer = _mixup(SimpleNamespace(augment=SimpleNamespace(mixup=cfg)), num_classes)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        mixed, targets = mixer(x, y)
    finally:
        np.random.set_state(state)
    out = (mixed.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    soft = targets.numpy().astype(np.float64)
    lam = float(soft[np.arange(len(y)), y.numpy()].min()) if len(y) else 1.0
    return out, soft, lam


def soft_label_caption(target_row: np.ndarray, class_names: list[str], top: int = 3) -> str:
    """'Coat 63% + Bag 37%': the soft label a mixed image is trained towards. Shares as percentages after
    the name, so that digit classes do not read as numbers next to numbers ('0.88 0 + 0.12 5')."""
    order = np.argsort(-target_row)[:top]
    parts = [
        f"{class_names[c] if c < len(class_names) else c} {100 * target_row[c]:.0f}%"
        for c in order
        if target_row[c] > 0.005
    ]
    return " + ".join(parts)
