"""Train / validation / test splits of a loaded dataset, resized to the run's image size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.formats import ImageArrays, resize
from engine.data.stats import channel_stats


@dataclass
class Splits:
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    mean: list[float]
    std: list[float]
    test_is_holdout: bool  # True when the test split was carved out of the training data
    val_is_own: bool = False  # True when validation is the dataset's own split (not carved from train)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[1])


def stratified_split(y: np.ndarray, fraction: float, seed: int, stratified: bool = True):
    """Indices (keep, held_out): `fraction` of each class held out (at least one per class when possible)."""
    rng = np.random.default_rng(seed)
    if fraction <= 0:
        return np.arange(len(y)), np.arange(0)
    if not stratified:
        perm = rng.permutation(len(y))
        k = max(1, int(round(fraction * len(y))))
        return np.sort(perm[k:]), np.sort(perm[:k])
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        held.append(idx[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.arange(0)
    keep = np.setdiff1d(np.arange(len(y)), held_idx)
    return keep, held_idx


def kfold_split(y: np.ndarray, k: int, fold: int, seed: int, stratified: bool = True):
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (StratifiedKFold if stratified else KFold)(n_splits=k, shuffle=True, random_state=seed)
    for i, (train_idx, val_idx) in enumerate(splitter.split(np.zeros(len(y)), y)):
        if i == fold:
            return train_idx, val_idx
    raise ValueError("fold out of range")


def adapt_images(x: np.ndarray, size: int | None, channels) -> np.ndarray:
    if size is not None and x.shape[1:3] != (size, size):
        x = np.stack([resize(im, size) for im in x])
    if channels == 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif channels == 1 and x.shape[-1] == 3:
        x = np.round(x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None].astype(
            np.uint8
        )
    return np.ascontiguousarray(x)


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _like(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The dataset's own validation images in the training images' size and channels."""
    return adapt_images(v, x.shape[1] if v.shape[1:3] != x.shape[1:3] else None, x.shape[-1])


def has_own_val(data: ImageArrays) -> bool:
    return data.val_x is not None and data.val_y is not None and len(data.val_y) > 0


def split_notes(data: ImageArrays, cfg) -> list[tuple[str, str]]:
    """What the dataset's own splits override in the config, as (field, sentence): not errors, said
    at validation and in the run's log. val_fraction counts as set when it is not the default."""
    notes = []
    if has_own_val(data) and not cfg.kfold:
        default = type(cfg).model_fields["val_fraction"].default
        if "val_fraction" in cfg.model_fields_set and cfg.val_fraction != default:
            notes.append(
                (
                    "data.val_fraction",
                    f"the dataset has its own validation split ({len(data.val_y)} images), which wins: "
                    f"val_fraction {cfg.val_fraction} is not used",
                )
            )
    return notes


def make_splits(data: ImageArrays, cfg) -> Splits:
    """cfg: DataConfig. Test: the dataset's own, else a seeded stratified holdout of the training data.
    Validation: the dataset's own (valid/ folder, split=val rows), else `val_fraction` of the training
    data; with K-fold the dataset's own validation images join the pool the folds are drawn from."""
    x, y = data.train_x, data.train_y
    own_val = has_own_val(data)
    if data.test_x is not None:
        test_x, test_y, holdout = data.test_x, data.test_y, False
    else:
        keep, test_idx = stratified_split(y, cfg.test_fraction, cfg.split_seed + 7919, True)
        test_x, test_y, holdout = x[test_idx], y[test_idx], True
        x, y = x[keep], y[keep]
    if own_val and cfg.kfold:
        x, y = np.concatenate([x, _like(data.val_x, x)]), np.concatenate([y, data.val_y])
        own_val = False
    if cfg.kfold:
        train_idx, val_idx = kfold_split(y, cfg.kfold, cfg.fold, cfg.split_seed, cfg.stratified)
    elif own_val:
        train_idx, val_idx = np.arange(len(y)), np.arange(0)
    else:
        train_idx, val_idx = stratified_split(y, cfg.val_fraction, cfg.split_seed, cfg.stratified)
    val_x, val_y = x[val_idx], y[val_idx]
    if own_val:
        val_x, val_y = _like(data.val_x, x), data.val_y
    if cfg.train_on_val:
        if own_val:
            x, y = np.concatenate([x, val_x]), np.concatenate([y, val_y])
            train_idx = np.arange(len(y))
        else:
            train_idx = np.concatenate([train_idx, val_idx])
    train_x, train_y = x[train_idx], y[train_idx]
    if cfg.max_train_samples and len(train_y) > cfg.max_train_samples:
        keep, _ = stratified_split(train_y, 1 - cfg.max_train_samples / len(train_y), cfg.split_seed + 1, True)
        train_x, train_y = train_x[keep], train_y[keep]
    train_x, val_x, test_x = (adapt_images(a, cfg.image_size, cfg.channels) for a in (train_x, val_x, test_x))
    if cfg.normalize == "dataset":
        mean, std = channel_stats(train_x)
    elif cfg.normalize == "imagenet":
        c = train_x.shape[-1]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ([sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3])
    elif cfg.normalize == "custom":  # one value per channel: engine.preflight checks it against these images
        mean, std = list(cfg.mean), list(cfg.std)
    else:
        mean, std = [0.0] * train_x.shape[-1], [1.0] * train_x.shape[-1]
    return Splits(train_x, train_y, val_x, val_y, test_x, test_y, data.class_names, mean, std, holdout, own_val)
