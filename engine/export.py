"""A run's checkpoint out of the lab (ONNX, TorchScript) and predictions on new image files.

The exported graph takes what the engine's data path holds, uint8 NHWC images at the run's size and
channels, and returns class probabilities: the run's normalisation (the one in
`engine.data.normalize_batch`) and the softmax are inside it, so a user feeds decoded pixels and gets
the engine's numbers back. Image size, channels, mean/std and class names also go in the ONNX
metadata, for whoever resizes the images before calling it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import ExperimentConfig
from engine.data import IMAGE_EXTS, DatasetSpec, adapt_images, load_arrays
from engine.models import build_model
from engine.training import checkpoint as ckpt

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17


@dataclass
class LoadedModel:
    """A checkpoint's evaluated weights, ready for inference on CPU, with what its inputs need."""

    model: torch.nn.Module
    cfg: ExperimentConfig
    class_names: list[str]
    mean: list[float]
    std: list[float]
    epoch: int

    @property
    def channels(self) -> int:
        return len(self.mean)


def load_checkpoint(path: str | Path) -> LoadedModel:
    """The weights that were (or would be) evaluated: the EMA copy of a full checkpoint when the run evaluates EMA."""
    state = ckpt.load(path)
    cfg = ExperimentConfig.model_validate_json(state["config"])
    model = build_model(
        cfg.model.model_copy(update={"pretrained": False}), len(state["mean"]), len(state["class_names"])
    )
    ema_weights = state.get("ema") if cfg.regularize.ema.evaluate_ema else None
    model.load_state_dict(ema_weights if ema_weights is not None else state["model"])
    return LoadedModel(model.eval(), cfg, list(state["class_names"]), state["mean"], state["std"], int(state["epoch"]))


def run_image_size(cfg: ExperimentConfig, spec: DatasetSpec) -> int:
    """The side the run trained at: data.image_size, else the dataset's own (what make_splits kept)."""
    return cfg.data.image_size or int(load_arrays(spec).train_x.shape[1])


class WithPreprocessing(torch.nn.Module):
    """uint8 (N, H, W, C) -> class probabilities (N, classes), normalising exactly as normalize_batch does."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return F.softmax(self.model((x - self.mean) / self.std).float(), dim=1)


def _example(loaded: LoadedModel, image_size: int, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, image_size, image_size, loaded.channels), dtype=torch.uint8, generator=g)


def export_onnx(loaded: LoadedModel, image_size: int, out: str | Path) -> Path:
    """ONNX with a dynamic batch axis, checked with onnxruntime against torch before it is returned."""
    import onnx

    out = Path(out)
    wrapped = WithPreprocessing(loaded.model, loaded.mean, loaded.std).eval()
    example = _example(loaded, image_size)
    # The TorchScript-based exporter: the torch.export-based one needs onnxscript, which we do not ship.
    torch.onnx.export(
        wrapped,
        (example,),
        str(out),
        dynamo=False,
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=ONNX_OPSET,
    )
    proto = onnx.load(str(out))
    for key, value in _metadata(loaded, image_size).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    _check_close(onnx_probabilities(out, example.numpy()), _torch_probabilities(wrapped, example), "ONNX")
    return out


def export_torchscript(loaded: LoadedModel, image_size: int, out: str | Path) -> Path:
    """torch.jit.trace of the preprocessing wrapper; metadata as an extra file `meta.json` in the archive."""
    out = Path(out)
    wrapped = WithPreprocessing(loaded.model, loaded.mean, loaded.std).eval()
    example = _example(loaded, image_size)
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, (example,))
    torch.jit.save(traced, str(out), _extra_files={"meta.json": json.dumps(_metadata(loaded, image_size))})
    _check_close(torchscript_probabilities(out, example.numpy()), _torch_probabilities(wrapped, example), "TorchScript")
    return out


def export(loaded: LoadedModel, image_size: int, fmt: str, out: str | Path) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt} (choose from {', '.join(FORMATS)})")
    return (export_onnx if fmt == "onnx" else export_torchscript)(loaded, image_size, out)


def onnx_probabilities(path: str | Path, images_uint8: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": np.ascontiguousarray(images_uint8)})[0]


def torchscript_probabilities(path: str | Path, images_uint8: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(images_uint8))).numpy()


def _torch_probabilities(wrapped: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return wrapped(images).numpy()


def _check_close(got: np.ndarray, want: np.ndarray, what: str, atol: float = 1e-4) -> None:
    if got.shape != want.shape or not np.allclose(got, want, atol=atol):
        raise RuntimeError(
            f"the {what} model's probabilities differ from torch's (max diff {np.abs(got - want).max()})"
        )


def _metadata(loaded: LoadedModel, image_size: int) -> dict[str, str]:
    return {
        "input": f"uint8 NHWC, {image_size}x{image_size}x{loaded.channels}; normalisation inside the graph",
        "output": "class probabilities (softmax)",
        "image_size": str(image_size),
        "channels": str(loaded.channels),
        "mean": json.dumps(loaded.mean),
        "std": json.dumps(loaded.std),
        "class_names": json.dumps(loaded.class_names),
    }


# ------------------------------------------------------------------------------------------ predict
def image_files(paths: list[str | Path]) -> list[Path]:
    """Files as given, and the images under any folder (recursively, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS))
        else:
            out.append(p)
    return out


def preprocess(files: list[Path], image_size: int, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) as the run's test images are made: read, resized to the run's size, its channels."""
    from engine.data.formats import _read_image

    return np.concatenate([adapt_images(_read_image(f)[None], image_size, channels) for f in files])


def predict_files(
    loaded: LoadedModel, files: list[Path], image_size: int, tta: str = "none", device: str = "cpu"
) -> np.ndarray:
    """(N, classes) probabilities through the engine's own prediction (and TTA) code."""
    from engine.training.evaluate import tta_probabilities

    x = preprocess(files, image_size, loaded.channels)
    dev = torch.device(device)
    model = loaded.model.to(dev)
    n = len(loaded.class_names)
    return tta_probabilities(model, x, tta, n, loaded.mean, loaded.std, dev, seed=loaded.cfg.train.seed).numpy()


def write_predictions_csv(out: str | Path, files: list[Path], probs: np.ndarray, class_names: list[str]) -> Path:
    """One row per image: path, predicted class, confidence, then one probability column per class."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "predicted", "confidence", *(f"p_{c}" for c in class_names)])
        for path, p in zip(files, probs, strict=True):
            k = int(p.argmax())
            w.writerow([str(path), class_names[k], f"{p[k]:.6f}", *(f"{v:.6f}" for v in p)])
    return out
