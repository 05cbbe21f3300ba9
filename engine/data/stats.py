"""Per-channel statistics of uint8 image arrays (what normalisation divides by), cached on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from engine.data.formats import ImageArrays, cache_dir
from engine.fileio import atomic_write_text

STATS_CHUNK_PIXELS = 1 << 20


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (what normalisation divides by).

    Accumulated over fixed-size float32 chunks of pixels (sums in float64), so the extra memory is a
    few MB whatever the image size: never a float copy of the dataset. Cached on disk by the images' fingerprint: a dataset is measured once."""
    cached = _stats_cache_path(x)
    if cached is not None and cached.is_file():
        try:
            stats = json.loads(cached.read_text())
            return stats["mean"], stats["std"]
        except (OSError, ValueError, KeyError):
            pass
    c = x.shape[-1]
    pixels = x.reshape(-1, c)  # a view: x is one contiguous array
    total, total_sq = np.zeros(c), np.zeros(c)
    for i in range(0, len(pixels), STATS_CHUNK_PIXELS):
        chunk = pixels[i : i + STATS_CHUNK_PIXELS].astype(np.float32)  # squares of 0..255 are exact in float32
        total += chunk.sum(axis=0, dtype=np.float64)
        total_sq += np.square(chunk).sum(axis=0, dtype=np.float64)
    count = len(pixels)
    mean = total / max(count, 1) / 255.0
    var = np.maximum(total_sq / max(count, 1) / 255.0**2 - mean**2, 0.0)
    std = np.sqrt(var)
    mean_l, std_l = mean.tolist(), np.where(std < 1e-6, 1.0, std).tolist()
    if cached is not None:
        try:
            atomic_write_text(cached, json.dumps({"mean": mean_l, "std": std_l, "images": int(len(x))}))
        except OSError:
            pass  # read-only location: measured again next time
    return mean_l, std_l


def _stats_cache_path(x: np.ndarray) -> Path | None:
    """A content fingerprint of an image array: shape plus a strided sample of whole images."""
    if len(x) < 256:  # tiny arrays: measuring is cheaper than hashing and a file
        return None
    h = hashlib.sha1(repr(x.shape).encode())
    step = max(1, len(x) // 64)
    h.update(np.ascontiguousarray(x[::step]).tobytes())
    h.update(np.ascontiguousarray(x[-1]).tobytes())
    return cache_dir() / "stats" / f"{h.hexdigest()[:20]}.json"


def dataset_summary(data: ImageArrays) -> dict:
    """Class counts, image sizes and mean/std: what the Datasets page shows."""
    counts = np.bincount(data.train_y, minlength=data.num_classes).tolist()
    test_counts = np.bincount(data.test_y, minlength=data.num_classes).tolist() if data.test_y is not None else None
    mean, std = channel_stats(data.train_x)
    return {
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "train_count": int(len(data.train_y)),
        "test_count": int(len(data.test_y)) if data.test_y is not None else 0,
        "val_count": int(len(data.val_y)) if data.val_y is not None else 0,  # the dataset's own validation split
        "class_counts": counts,
        "test_class_counts": test_counts,
        "image_shape": list(data.train_x.shape[1:]),
        "mean": mean,
        "std": std,
    }
