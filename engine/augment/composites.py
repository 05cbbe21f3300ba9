"""Recipes albumentations has no single class for (pad-then-random-crop, RandAugment), built from its
transforms, and the one lazy import of albumentations itself (it is slow and noisy to import)."""

from __future__ import annotations

import functools
import warnings

import numpy as np


@functools.lru_cache(maxsize=1)
def albumentations():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import albumentations as A
    return A


def no_params() -> dict:
    """The params of a transform that takes none (a flip): checked without importing albumentations."""
    return {}


def pad_random_crop_params(padding: int = 4, fill: int = 0) -> dict:
    """PadRandomCrop's params, checked (without importing albumentations)."""
    if not isinstance(padding, int) or not 0 <= padding <= 256:
        raise ValueError("padding must be an integer between 0 and 256")
    return {"padding": padding, "fill": fill}


def pad_random_crop(padding: int = 4, fill: int = 0, p: float = 1.0):
    """Pad by `padding` px each side, then crop back to the original size at a random place (CIFAR-style)."""
    pad_random_crop_params(padding, fill)
    A = albumentations()

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


def rand_augment(num_ops: int = 2, magnitude: int = 9, p: float = 1.0):
    """RandAugment (Cubuk et al.): apply `num_ops` ops picked uniformly, each at strength magnitude/30."""
    if not isinstance(num_ops, int) or not 1 <= num_ops <= 10:
        raise ValueError("num_ops must be an integer between 1 and 10")
    if not isinstance(magnitude, (int, float)) or not 0 <= magnitude <= 30:
        raise ValueError("magnitude must be between 0 and 30")
    A = albumentations()
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
