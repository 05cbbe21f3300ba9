"""Prediction, confusion matrices, per-class metrics and test-time augmentation."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from engine.augment import ops, registry
from engine.data import normalize_batch
from engine.training.live import batches

# Images per prediction batch. On a CPU a batch of 512 outgrows the caches: at 28-64 px a batch of 128
# predicted 1.4-2.7x faster than 512 for the small CNN, the small ResNet and MobileNetV3, and ResNet-18 at
# 32 px 1.26x (bench/bench_eval_batch.py, docs/benchmarks.md). A GPU keeps the bigger batch.
CPU_EVAL_BATCH = 128
GPU_EVAL_BATCH = 512


def eval_batch_size(device) -> int:
    """The prediction batch for a device (a torch.device or its name)."""
    return CPU_EVAL_BATCH if torch.device(device).type == "cpu" else GPU_EVAL_BATCH


@torch.no_grad()
def predict_probs(
    model,
    x_uint8: np.ndarray | torch.Tensor,
    mean,
    std,
    device,
    batch_size=None,
    channels_last=False,
    amp_dtype=None,
    view=None,
    on_batch=None,
) -> torch.Tensor:
    """Softmax probabilities (N, C) on CPU. `view` maps a uint8 NHWC batch to another view of it;
    `on_batch(n)` is told after each batch of n images (live progress); batch_size None is the
    device's eval_batch_size."""
    model.eval()
    batch_size = batch_size or eval_batch_size(device)
    out = []
    for i in range(0, len(x_uint8), batch_size):
        xb = x_uint8[i : i + batch_size]
        xb = (torch.from_numpy(np.ascontiguousarray(xb)) if isinstance(xb, np.ndarray) else xb).to(
            device, non_blocking=True
        )
        if view is not None:
            xb = view(xb)
        xb = normalize_batch(xb, mean, std, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(xb)
        out.append(F.softmax(logits.float(), dim=1).cpu())
        if on_batch is not None:
            on_batch(len(xb))
    return torch.cat(out)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def per_class_metrics(cm: np.ndarray) -> dict[str, list[float]]:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(), "support": support.tolist()}


def summarize(probs: torch.Tensor, y: np.ndarray, num_classes: int, with_predictions: bool = True) -> dict:
    """Accuracy, mean NLL, confusion matrix, per-class P/R/F1 and (optionally) per-sample predictions."""
    y_t = torch.as_tensor(y)
    conf, pred = probs.max(dim=1)
    nll = -torch.log(probs[torch.arange(len(y_t)), y_t].clamp_min(1e-12))
    cm = confusion_matrix(y, pred.numpy(), num_classes)
    result = {
        "accuracy": float((pred == y_t).float().mean()),
        "loss": float(nll.mean()),
        "confusion": cm.tolist(),
        "per_class": per_class_metrics(cm),
    }
    if with_predictions:
        result["predictions"] = {
            "target": y.tolist(),
            "pred": pred.tolist(),
            "confidence": [round(float(c), 5) for c in conf],
            "loss": [round(float(v), 5) for v in nll],
        }
    return result


# ------------------------------------------------------------------------------- TTA views
# Each deterministic variant is the mean over the views of symmetries declared in engine.augment.registry
# (composed, the last applied first). Views act on uint8 NHWC batches, before normalisation, on the device.
TTA_SYMMETRIES: dict[str, tuple[str, ...]] = {
    "none": (),
    "hflip": ("HorizontalFlip",),
    "vflip": ("VerticalFlip",),
    "rot90": ("RandomRotate90",),
    "dihedral8": ("RandomRotate90", "HorizontalFlip"),
    "multicrop": ("PadRandomCrop",),
}


def tta_views(variant: str, height: int, width: int) -> list:
    """The deterministic views a TTA variant averages over. Rotations by 90/270 degrees need square
    images; on others rot90 is {0, 180} and dihedral8 the 4 flips/180-rotations."""
    if variant not in TTA_SYMMETRIES:
        raise ValueError(f"unknown TTA variant {variant}")
    return registry.tta_views(TTA_SYMMETRIES[variant], height, width)


# A user's own TTA set (eval.tta_set): single views by name, the names in engine.config.TTA_SET_VIEWS.
SET_VIEWS = {
    "identity": lambda: ops.identity,
    "hflip": lambda: ops.hflip,
    "vflip": lambda: ops.vflip,
    "rot90": lambda: ops.rot90(1),
    "rot180": lambda: ops.rot90(2),
    "rot270": lambda: ops.rot90(3),
    "transpose": lambda: lambda x: ops.hflip(ops.rot90(1)(x)),
}
NEEDS_SQUARE = {"rot90", "rot270", "transpose"}


def tta_set_of(eval_cfg) -> dict | None:
    """The config's own TTA set as {name, views, combine}, or None without one."""
    if not eval_cfg.tta_set:
        return None
    return {"name": eval_cfg.tta_set_name, "views": list(eval_cfg.tta_set), "combine": eval_cfg.tta_set_combine}


def set_views(names, height: int, width: int) -> list:
    """The views of a user's TTA set; turning by 90 or 270 degrees keeps the shape of square images only."""
    if height != width and NEEDS_SQUARE & set(names):
        raise ValueError(f"eval.tta_set: {', '.join(sorted(NEEDS_SQUARE & set(names)))} need square images")
    return [SET_VIEWS[n]() for n in names]


def combine_mean(runs: list[torch.Tensor]) -> torch.Tensor:
    """Mean of the passes' probabilities."""
    return sum(runs) / len(runs)


def combine_vote(runs: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Majority vote of the passes' argmax, as a distribution over classes (vote shares).
    Ties go to the class with the higher mean probability."""
    votes = sum(F.one_hot(r.argmax(1), num_classes).float() for r in runs)
    p = votes + 1e-3 * combine_mean(runs)
    return p / p.sum(dim=1, keepdim=True)


def random_passes(
    model, x: np.ndarray, pipeline, passes: int, seed: int, mean, std, device, **kw
) -> list[torch.Tensor]:
    """`passes` predictions, each on a fresh draw of the (training) augmentation pipeline, seeded."""
    from engine.augment import apply_pipeline, seed_pipeline

    seed_pipeline(pipeline, seed)
    runs = []
    for _ in range(passes):
        aug = np.stack([apply_pipeline(pipeline, im) for im in x]) if pipeline is not None else x
        runs.append(predict_probs(model, aug, mean, std, device, **kw))
    return runs


def tta_probabilities(
    model,
    x: np.ndarray,
    variant: str,
    num_classes: int,
    mean,
    std,
    device,
    *,
    passes=5,
    pipeline=None,
    seed=0,
    channels_last=False,
    amp_dtype=None,
    batch_size=None,
    tta_set: dict | None = None,
    on_batch=None,
) -> torch.Tensor:
    """(N, C) class probabilities of one TTA variant (or of the user's own set, `tta_set`, by its name)."""
    kw = dict(batch_size=batch_size, channels_last=channels_last, amp_dtype=amp_dtype, on_batch=on_batch)
    if tta_set is not None and variant == tta_set["name"]:
        views = set_views(tta_set["views"], x.shape[1], x.shape[2])
        runs = [predict_probs(model, x, mean, std, device, view=v, **kw) for v in views]
        return combine_mean(runs) if tta_set["combine"] == "mean" else combine_vote(runs, num_classes)
    if variant in ("random_mean", "random_vote"):
        runs = random_passes(model, x, pipeline, passes, seed, mean, std, device, **kw)
        return combine_mean(runs) if variant == "random_mean" else combine_vote(runs, num_classes)
    views = tta_views(variant, x.shape[1], x.shape[2])
    return combine_mean([predict_probs(model, x, mean, std, device, view=v, **kw) for v in views])


def variant_views(variant: str, height: int, width: int, passes: int = 5, tta_set: dict | None = None) -> int:
    """How many predictions of the whole split a TTA variant makes (its views, or its random passes)."""
    if tta_set is not None and variant == tta_set["name"]:
        return len(tta_set["views"])
    if variant in ("random_mean", "random_vote"):
        return passes
    return len(tta_views(variant, height, width))


def run_tta(
    model,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    variants,
    mean,
    std,
    device,
    *,
    passes=5,
    pipeline=None,
    seed=0,
    channels_last=False,
    amp_dtype=None,
    batch_size=None,
    known: dict[str, torch.Tensor] | None = None,
    tta_set: dict | None = None,
    known_seconds: dict[str, float] | None = None,
    progress=None,
) -> dict[str, dict]:
    """Evaluate each TTA variant; returns variant -> {accuracy, per_class: {accuracy, precision, recall, f1},
    seconds_per_image}: the wall time of all the variant's views, per image (its inference cost).
    `known`: probabilities already predicted for some variants (e.g. "none": the plain test prediction);
    `known_seconds`: the wall seconds those predictions took (their cost is then that time).
    `progress`: an engine.training.live.LiveProgress told of each variant ("tta:<variant>") and batch."""
    results = {}
    batch_size = batch_size or eval_batch_size(device)
    for variant in variants:
        p = (known or {}).get(variant)
        seconds = (known_seconds or {}).get(variant) if p is not None else None
        if p is None:
            on_batch = None
            if progress is not None:
                views = variant_views(variant, x.shape[1], x.shape[2], passes, tta_set)
                progress.phase(f"tta:{variant}", views * batches(len(x), batch_size))
                on_batch = progress.advance
            started = time.perf_counter()  # predict_probs returns CPU tensors: the device has finished
            p = tta_probabilities(
                model,
                x,
                variant,
                num_classes,
                mean,
                std,
                device,
                passes=passes,
                pipeline=pipeline,
                seed=seed,
                channels_last=channels_last,
                amp_dtype=amp_dtype,
                batch_size=batch_size,
                tta_set=tta_set,
                on_batch=on_batch,
            )
            seconds = time.perf_counter() - started
        s = summarize(p, y, num_classes, with_predictions=False)
        pc = s["per_class"]
        results[variant] = {
            "accuracy": s["accuracy"],
            "per_class": {
                "accuracy": pc["recall"],
                "precision": pc["precision"],
                "recall": pc["recall"],
                "f1": pc["f1"],
            },
            "seconds_per_image": seconds / max(len(y), 1) if seconds is not None else None,
        }
    return results
