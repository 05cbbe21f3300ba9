"""Data health: near-duplicates between the training and the test split, label-noise suspects from a
trained run's predictions, and class imbalance with the loss it suggests. Pure functions on arrays
(no database, no model); the Datasets and Run detail pages call them.

- Near-duplicates: a perceptual hash (imagehash's pHash: the sign of the low DCT frequencies of a
  32x32 grey copy, 64 bits) of every image, then every train/test pair within a Hamming distance.
  A test image that is (almost) a training image measures memory, not generalisation.
- Label-noise suspects: images the model predicts, with high confidence, as a class other than
  their label (confident learning's simplest signal); ranked by that confidence.
- Imbalance: counts per class, the ratio of the largest to the smallest class, and the loss it
  suggests: plain cross-entropy when balanced, inverse-frequency weighted CE from WEIGHTED_RATIO,
  focal loss (with the same weights) from FOCAL_RATIO.

imagehash is imported inside the functions that hash: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

DEFAULT_HAMMING = 2  # of 64 bits: a re-save, a brightness change or slight noise stays within it; look-alikes of small images come closer than 4
WEIGHTED_RATIO = 1.5  # largest / smallest class from which class-weighted CE is suggested
FOCAL_RATIO = 10.0  # ... and from which focal loss (gamma 2) on top of the weights
HASH_SIZE = 8  # 8x8 = 64-bit pHash


# ------------------------------------------------------------------------------- near-duplicates
def _pil(img: np.ndarray):
    from PIL import Image

    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return Image.fromarray(a)


def phash_array(images: np.ndarray, hash_size: int = HASH_SIZE, cache: bool = True) -> np.ndarray:
    """uint64 pHash of every uint8 (N, H, W[, C]) image (hash_size 8 -> 64 bits). Cached on disk by content."""
    import imagehash

    path = _hash_cache_path(images, hash_size) if cache else None
    if path is not None and path.is_file():
        try:
            got = np.load(path)
            if len(got) == len(images):
                return got
        except (OSError, ValueError):
            pass
    out = np.empty(len(images), dtype=np.uint64)
    for i, im in enumerate(images):
        bits = imagehash.phash(_pil(im), hash_size=hash_size).hash.reshape(-1)[:64]
        out[i] = np.packbits(bits).view(">u8")[0] if len(bits) == 64 else int("".join(map(str, bits.astype(int))), 2)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, out)
            tmp.replace(path)
        except OSError:
            pass  # read-only cache: hashed again next time
    return out


def _hash_cache_path(x: np.ndarray, hash_size: int) -> Path | None:
    if len(x) < 256:  # small arrays: hashing them is quicker than a file
        return None
    from engine.data import cache_dir

    h = hashlib.sha1(repr((x.shape, hash_size)).encode())
    h.update(np.ascontiguousarray(x).tobytes())  # all of it: one changed image must change the key
    return cache_dir() / "phash" / f"{h.hexdigest()[:20]}.npy"


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distance between every hash of `a` and every hash of `b`: (len(a), len(b)) uint8."""
    return np.bitwise_count(np.bitwise_xor(a[:, None], b[None, :])).astype(np.uint8)


def scan_duplicates(
    train_x: np.ndarray,
    test_x: np.ndarray,
    threshold: int = DEFAULT_HAMMING,
    max_pairs: int = 500,
    train_hashes: np.ndarray | None = None,
    test_hashes: np.ndarray | None = None,
) -> dict:
    """Every train/test pair whose pHashes differ in at most `threshold` bits, in one pass:
    {"pairs": the closest `max_pairs` [{"train", "test", "distance"}], "total_pairs", "test_images"
    (test images with at least one such pair), "share" (of the test split), "min_distance" (per test image)}."""
    th = phash_array(train_x) if train_hashes is None else train_hashes
    sh = phash_array(test_x) if test_hashes is None else test_hashes
    pairs: list[tuple[int, int, int]] = []
    total = 0
    min_distance = np.full(len(sh), 255, dtype=np.uint8)
    chunk = max(1, 4_000_000 // max(len(th), 1))  # ~4M distances at a time
    for start in range(0, len(sh), chunk):
        d = hamming(sh[start : start + chunk], th)
        if d.size:
            min_distance[start : start + len(d)] = d.min(axis=1)
        tj, ti = np.nonzero(d <= threshold)
        total += len(tj)
        pairs.extend(zip(d[tj, ti].tolist(), (tj + start).tolist(), ti.tolist()))
        if len(pairs) > 4 * max_pairs:  # keep memory bounded on a set full of copies
            pairs = sorted(pairs)[:max_pairs]
    pairs.sort()
    near = int((min_distance <= threshold).sum())
    return {
        "pairs": [{"train": int(i), "test": int(j), "distance": int(dist)} for dist, j, i in pairs[:max_pairs]],
        "total_pairs": int(total),
        "test_images": near,
        "share": near / len(sh) if len(sh) else 0.0,
        "min_distance": min_distance,
    }


def near_duplicates(train_x: np.ndarray, test_x: np.ndarray, threshold: int = DEFAULT_HAMMING, **kw) -> list[dict]:
    """Train/test pairs whose pHashes differ in at most `threshold` bits, closest first:
    [{"train": i, "test": j, "distance": d}] (at most `max_pairs`; see scan_duplicates)."""
    return scan_duplicates(train_x, test_x, threshold, **kw)["pairs"]


def duplicate_summary(pairs: list[dict], n_test: int) -> dict:
    """How many test images these pairs hold, and their share of the test split."""
    tests = {p["test"] for p in pairs}
    return {"pairs": len(pairs), "test_images": len(tests), "share": len(tests) / n_test if n_test else 0.0}


# ------------------------------------------------------------------------------- label noise
def label_noise_suspects(predictions: dict, top: int = 48, min_confidence: float = 0.5) -> list[dict]:
    """Images predicted as another class than their label with at least `min_confidence`, most
    confident first: [{"index", "label", "pred", "confidence", "loss"}]. `predictions`: the stored
    evaluation arrays {target, pred, confidence[, loss]} of one split, in the split's order."""
    target = np.asarray(predictions.get("target", []), dtype=np.int64)
    pred = np.asarray(predictions.get("pred", []), dtype=np.int64)
    conf = np.asarray(predictions.get("confidence", []), dtype=np.float64)
    loss = np.asarray(predictions.get("loss", np.zeros(len(target))), dtype=np.float64)
    wrong = np.flatnonzero((pred != target) & (conf >= min_confidence))
    order = wrong[np.lexsort((-loss[wrong], -conf[wrong]))]  # by confidence, then by loss
    return [
        {
            "index": int(i),
            "label": int(target[i]),
            "pred": int(pred[i]),
            "confidence": float(conf[i]),
            "loss": float(loss[i]),
        }
        for i in order[:top]
    ]


# ------------------------------------------------------------------------------- imbalance
def imbalance_report(counts: list[int] | np.ndarray, class_names: list[str] | None = None) -> dict:
    """Counts per class, the imbalance ratio (largest / smallest non-empty class), the classes with
    no image, the inverse-frequency weights and the suggested loss section (or None: keep the loss)."""
    from engine.training.losses import inverse_frequency_weights

    c = np.asarray(counts, dtype=np.int64)
    names = [str(n) for n in (class_names or range(len(c)))]
    nonzero = c[c > 0]
    ratio = float(nonzero.max() / nonzero.min()) if len(nonzero) else 1.0
    labels = np.repeat(np.arange(len(c)), c)
    weights = inverse_frequency_weights(labels, len(c)).tolist() if len(c) else []
    if ratio >= FOCAL_RATIO:
        loss = {"name": "focal", "focal_gamma": 2.0, "class_weights": "inverse_frequency"}
        why = (
            f"the largest class has {ratio:.1f}× the images of the smallest (≥ {FOCAL_RATIO:g}×): focal loss "
            "(gamma 2) down-weights the many easy majority images, and inverse-frequency class weights "
            "give every class the same total weight"
        )
    elif ratio >= WEIGHTED_RATIO:
        loss = {"name": "ce", "class_weights": "inverse_frequency"}
        why = (
            f"the largest class has {ratio:.1f}× the images of the smallest (≥ {WEIGHTED_RATIO:g}×): "
            "cross-entropy weighted by inverse class frequency gives every class the same total weight"
        )
    else:
        loss = None
        why = f"the classes are balanced (ratio {ratio:.2f} < {WEIGHTED_RATIO:g}): plain cross-entropy is fine"
    return {
        "counts": c.tolist(),
        "class_names": names,
        "ratio": ratio,
        "empty_classes": [names[i] for i in np.flatnonzero(c == 0)],
        "weights": [round(float(w), 4) for w in weights],
        "loss": loss,
        "why": why,
    }


def with_loss(config: dict, loss: dict) -> dict:
    """A copy of a config dict with `loss` merged into its loss section (what "use this loss" sends)."""
    out = json.loads(json.dumps(config))
    out["loss"] = {**(out.get("loss") or {}), **loss}
    return out
