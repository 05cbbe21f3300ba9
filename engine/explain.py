"""Explanations of a trained model: Grad-CAM maps (the `grad-cam` package) for the predicted and the true
class, and an embedding view (penultimate features projected to 2-D with PCA or UMAP).

- Grad-CAM's target layer, per family: our small CNN's last conv block (`features.N`), our ResNet's
  last stage, a timm model's last feature stage (its `feature_info`), a torchvision ResNet's `layer4`
  or the last block of `features` (VGG, DenseNet, MobileNet, EfficientNet, ConvNeXt). On small images
  the last block can be 1x1, where Grad-CAM is flat: then the last block with more than one position.
- Penultimate features: the input of the classifier the lab put on every model (`_lab_head_name`),
  taken with a forward pre-hook; for timm models that is what `forward_head(pre_logits=True)` returns.
- `explain_checkpoint` does both for one checkpoint and split, and caches the arrays in the run's
  folder (`explain/`), keyed by the checkpoint file's size and time, so a second view is a file read.
- `gradcam_selection`: Grad-CAM maps of the images a gallery shows (any split: train, val, test), cached
  under a digest of their indices; `predict_split`: every image of a split predicted with the
  evaluation's preprocessing (normalisation only, no augmentation), e.g. the training split, whose
  confidently wrong images are label-noise suspects.

pytorch_grad_cam, sklearn's PCA and umap are imported inside the functions that use them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

METHODS = ("pca", "umap")
MAX_POINTS = 5000  # embedding points (a seeded subsample of larger splits): enough to see clusters, quick to draw
GALLERY = 24  # images given Grad-CAM maps: the split's highest-loss ones
SPLITS = ("train", "val", "test")
MAX_SELECTION = 96  # images of one gallery given Grad-CAM maps at a time


class ExplainError(ValueError):
    """The model or the request cannot be explained (no convolutional layer, unknown method)."""


# ------------------------------------------------------------------------------- target layers
def _candidates(model: nn.Module) -> list[str]:
    """Names of the blocks Grad-CAM may target, in forward order (the last one preferred)."""
    from engine.models.custom import CifarResNet, SmallCNN

    if isinstance(model, SmallCNN):
        return [
            f"features.{i}" for i, m in enumerate(model.features) if any(isinstance(c, nn.Conv2d) for c in m.modules())
        ]
    if isinstance(model, CifarResNet):
        return ["stem"] + [f"stages.{i}" for i in range(len(model.stages))]
    family = type(model).__module__.split(".")[0]
    if family == "timm" and getattr(model, "feature_info", None):
        return [fi["module"] for fi in model.feature_info if fi.get("module")]
    if family == "torchvision":
        if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
            return [f"layer{i}" for i in range(1, 5)]
        if isinstance(getattr(model, "features", None), nn.Sequential):
            return [f"features.{i}" for i in range(len(model.features))]
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]  # any CNN: its conv layers


def target_layer(model: nn.Module, channels: int, size: int) -> str:
    """The name of the module Grad-CAM targets: the last candidate block with a spatial output larger
    than 1x1 at this input size (a 1x1 map cannot show where), else the last 4-D one."""
    names = _candidates(model)
    shapes: dict[str, tuple] = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape) if torch.is_tensor(out) else ())
        )
        for n in names
    ]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, channels, size, size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    spatial = [n for n in names if len(shapes.get(n, ())) == 4]
    if not spatial:
        raise ExplainError(f"{type(model).__name__} has no convolutional block for Grad-CAM")
    wide = [n for n in spatial if shapes[n][2] * shapes[n][3] > 1]
    return (wide or spatial)[-1]


# ------------------------------------------------------------------------------- Grad-CAM
def _normalised(x_uint8: np.ndarray, mean, std, device) -> torch.Tensor:
    from engine.data import normalize_batch

    return normalize_batch(torch.from_numpy(np.ascontiguousarray(x_uint8)).to(device), mean, std)


def gradcam(
    model: nn.Module,
    x_uint8: np.ndarray,
    classes: list[int] | np.ndarray,
    mean,
    std,
    layer: str | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM of each image for its class in `classes`: float32 (N, H, W) in [0, 1], the input's size."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    device = next(model.parameters()).device
    h, w, c = x_uint8.shape[1:4]
    name = layer or target_layer(model, c, h)
    out = np.zeros((len(x_uint8), h, w), dtype=np.float32)
    with GradCAM(model=model, target_layers=[model.get_submodule(name)]) as cam:
        for i in range(0, len(x_uint8), batch_size):
            xb = _normalised(x_uint8[i : i + batch_size], mean, std, device)
            targets = [ClassifierOutputTarget(int(k)) for k in classes[i : i + batch_size]]
            out[i : i + len(xb)] = cam(input_tensor=xb, targets=targets)
    return out


def overlay(img_uint8: np.ndarray, cam: np.ndarray, px: int = 96) -> np.ndarray:
    """The image enlarged to at least `px` (nearest neighbour) with the map on top (jet colours): uint8 RGB."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    a = np.asarray(img_uint8)
    a = (
        np.repeat(a, 3, axis=-1)
        if a.ndim == 3 and a.shape[-1] == 1
        else (a[..., None].repeat(3, -1) if a.ndim == 2 else a)
    )
    scale = max(1, int(np.ceil(px / max(1, min(a.shape[:2])))))
    big = np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)
    m = cv2.resize(cam.astype(np.float32), (big.shape[1], big.shape[0]), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(big.astype(np.float32) / 255.0, np.clip(m, 0, 1), use_rgb=True, image_weight=0.55)


# ------------------------------------------------------------------------------- embeddings
@torch.no_grad()
def features_and_probs(model: nn.Module, x_uint8: np.ndarray, mean, std, batch_size: int = 256):
    """Penultimate features (N, D) and class probabilities (N, C): the classifier's input, by a forward pre-hook."""
    model.eval()
    device = next(model.parameters()).device
    head = model.get_submodule(getattr(model, "_lab_head_name", "head"))
    got: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: got.append(args[0].flatten(1).float().cpu()))
    probs = []
    try:
        for i in range(0, len(x_uint8), batch_size):
            logits = model(_normalised(x_uint8[i : i + batch_size], mean, std, device))
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
    finally:
        hook.remove()
    return torch.cat(got).numpy(), torch.cat(probs).numpy()


def project(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) float32 with PCA (sklearn) or UMAP (umap-learn)."""
    if method not in METHODS:
        raise ExplainError(f"method: choose from {', '.join(METHODS)}")
    f = np.asarray(features, dtype=np.float32)
    if len(f) < 3:
        return np.zeros((len(f), 2), dtype=np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=seed).fit_transform(f)
    else:
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(f) - 1), random_state=seed, n_jobs=1)
        coords = reducer.fit_transform(f)
    return np.asarray(coords, dtype=np.float32)


def knn_accuracy(coords: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0) -> float:
    """Cross-validated k-NN accuracy in the 2-D view: how well the classes separate there (chance = 1/classes)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    folds = min(5, int(np.bincount(labels).max()) if len(labels) else 0, len(labels))
    _, per_class = np.unique(labels, return_counts=True)
    folds = min(folds, int(per_class.min())) if len(per_class) else 0
    if folds < 2:
        return float("nan")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=k), coords, labels, cv=cv).mean())


# ------------------------------------------------------------------------------- one checkpoint, cached
def cache_file(out_dir: str | Path, checkpoint: str | Path, kind: str, split: str, method: str = "") -> Path:
    """Where a result for this checkpoint file lives: its name carries the file's size and mtime,
    so a rewritten checkpoint (best.pt after a resume) is explained afresh."""
    p = Path(checkpoint)
    st = p.stat()
    tag = f"{p.stem}-{st.st_size}-{st.st_mtime_ns}"
    return Path(out_dir) / f"{kind}_{split}{'_' + method if method else ''}_{tag}.npz"


def load_cached(path: Path) -> dict | None:
    """A cached result as a dict of arrays (its meta decoded), or None when absent or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None
    if "meta" in d:
        d["meta"] = json.loads(str(d["meta"]))
    return d


def _save(path: Path, meta: dict, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)  # a reader sees the whole file or none


def explain_checkpoint(
    checkpoint: str | Path,
    spec,
    out_dir: str | Path,
    split: str = "test",
    method: str = "pca",
    gallery: int = GALLERY,
    indices: list[int] | None = None,
    device: str = "auto",
    max_points: int = MAX_POINTS,
) -> dict[str, Path]:
    """Embedding (2-D, coloured by true and predicted class) and Grad-CAM maps (predicted and true class)
    of one checkpoint on one split, written to `out_dir`; returns {"embedding": path, "gradcam": path}.
    Grad-CAM covers `indices`, else the `gallery` highest-loss images of the split."""
    from engine.data import load_arrays, make_splits
    from engine.export import load_checkpoint
    from engine.training.run import pick_device

    if method not in METHODS:
        raise ExplainError(f"method: choose from {', '.join(METHODS)}")
    loaded = load_checkpoint(checkpoint)
    splits = make_splits(load_arrays(spec), loaded.cfg.data)
    x, y = split_arrays(splits, split)
    if not len(y):
        raise ExplainError(f"split: the run has no {split} images")
    model = loaded.model.to(pick_device(device))
    emb_path = cache_file(out_dir, checkpoint, "embedding", split, method)
    cam_path = cache_file(out_dir, checkpoint, "gradcam", split)
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(len(y), max_points, replace=False)) if len(y) > max_points else np.arange(len(y))
    feats, probs = features_and_probs(model, x, loaded.mean, loaded.std)
    pred = probs.argmax(1)
    loss = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))
    coords = project(feats[subset], method)
    meta = {
        "checkpoint": str(checkpoint),
        "epoch": loaded.epoch,
        "split": split,
        "method": method,
        "class_names": loaded.class_names,
        "feature_dim": int(feats.shape[1]),
        "knn_accuracy": knn_accuracy(coords, y[subset]),
        "accuracy": float((pred == y).mean()),
    }
    _save(emb_path, meta, coords=coords, index=subset, target=y[subset], pred=pred[subset])
    if not cam_path.exists() or indices is not None:
        chosen = np.asarray(indices if indices is not None else np.argsort(-loss)[:gallery], dtype=np.int64)
        layer = target_layer(model, x.shape[-1], x.shape[1])
        cam_pred = gradcam(model, x[chosen], pred[chosen], loaded.mean, loaded.std, layer)
        cam_true = gradcam(model, x[chosen], y[chosen], loaded.mean, loaded.std, layer)
        _save(
            cam_path,
            {**meta, "layer": layer},
            index=chosen,
            target=y[chosen],
            pred=pred[chosen],
            confidence=probs[chosen, pred[chosen]],
            cam_pred=cam_pred.astype(np.float16),
            cam_true=cam_true.astype(np.float16),
        )
    return {"embedding": emb_path, "gradcam": cam_path}


def split_arrays(splits, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split of a run's splits (engine.data.make_splits), in the split's order."""
    if split not in SPLITS:
        raise ExplainError(f"split: choose from {', '.join(SPLITS)}")
    return {
        "train": (splits.train_x, splits.train_y),
        "val": (splits.val_x, splits.val_y),
        "test": (splits.test_x, splits.test_y),
    }[split]


def selection_tag(indices) -> str:
    """A short, stable name of an ordered set of image indices: a gallery's Grad-CAM maps are cached under it."""
    a = np.asarray(list(indices), dtype="<i8")
    return "sel" + hashlib.sha1(a.tobytes()).hexdigest()[:12]


def _loaded_split(checkpoint, spec, split: str, device: str):
    from engine.data import load_arrays, make_splits
    from engine.export import load_checkpoint
    from engine.training.run import pick_device

    loaded = load_checkpoint(checkpoint)
    x, y = split_arrays(make_splits(load_arrays(spec), loaded.cfg.data), split)
    if not len(y):
        raise ExplainError(f"split: the run has no {split} images")
    return loaded, x, y, loaded.model.to(pick_device(device))


def gradcam_selection(
    checkpoint: str | Path, spec, out_dir: str | Path, split: str, indices: list[int], device: str = "auto"
) -> Path:
    """Grad-CAM maps for the predicted and the true class of the chosen images of one split (a gallery's),
    written under `out_dir` (see cache_file; the method slot carries selection_tag(indices)); returns the path."""
    chosen = np.asarray(list(indices), dtype=np.int64)
    if not len(chosen) or len(chosen) > MAX_SELECTION:
        raise ExplainError(f"indices: give 1 to {MAX_SELECTION} images")
    loaded, x, y, model = _loaded_split(checkpoint, spec, split, device)
    if chosen.min() < 0 or chosen.max() >= len(y):
        raise ExplainError(f"indices: the {split} split has images 0 to {len(y) - 1}")
    _, probs = features_and_probs(model, x[chosen], loaded.mean, loaded.std)
    pred = probs.argmax(1)
    layer = target_layer(model, x.shape[-1], x.shape[1])
    cam_pred = gradcam(model, x[chosen], pred, loaded.mean, loaded.std, layer)
    cam_true = gradcam(model, x[chosen], y[chosen], loaded.mean, loaded.std, layer)
    path = cache_file(out_dir, checkpoint, "gradcam", split, selection_tag(chosen))
    meta = {
        "checkpoint": str(checkpoint),
        "epoch": loaded.epoch,
        "split": split,
        "class_names": loaded.class_names,
        "layer": layer,
        "selection": selection_tag(chosen),
    }
    _save(
        path,
        meta,
        index=chosen,
        target=y[chosen],
        pred=pred,
        confidence=probs[np.arange(len(chosen)), pred],
        cam_pred=cam_pred.astype(np.float16),
        cam_true=cam_true.astype(np.float16),
    )
    return path


def predict_split(
    checkpoint: str | Path, spec, out_dir: str | Path, split: str = "train", device: str = "auto"
) -> Path:
    """Every image of one split predicted by the checkpoint as an evaluation predicts (normalised, no
    augmentation, the evaluated weights): {target, pred, confidence, loss} in the split's order, written
    under `out_dir` (kind "predictions"); returns the path."""
    from engine.training.evaluate import predict_probs

    loaded, x, y, model = _loaded_split(checkpoint, spec, split, device)
    probs = predict_probs(model, x, loaded.mean, loaded.std, next(model.parameters()).device).numpy()
    pred = probs.argmax(1)
    loss = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))
    path = cache_file(out_dir, checkpoint, "predictions", split)
    meta = {
        "checkpoint": str(checkpoint),
        "epoch": loaded.epoch,
        "split": split,
        "class_names": loaded.class_names,
        "accuracy": float((pred == y).mean()),
    }
    _save(
        path,
        meta,
        target=np.asarray(y, dtype=np.int64),
        pred=pred.astype(np.int64),
        confidence=probs[np.arange(len(y)), pred].astype(np.float32),
        loss=loss.astype(np.float32),
    )
    return path
