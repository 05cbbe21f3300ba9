"""Prediction batch size on a CPU: the engine's prediction (engine.training.evaluate.predict_probs, as used by
validation, the test split and TTA) timed at several batch sizes, in one process, on random uint8 images.

    .venv/bin/python bench/bench_eval_batch.py [--sizes 64,128,256,512] [--repeats 3]

Prints, per model, the wall time per 1,000 images at each batch size (best of --repeats after a warm-up
pass) and the ratio of the old fixed batch (512) to the engine's CPU batch (CPU_EVAL_BATCH).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_whole_run import MODELS  # noqa: E402  (the whole-run bench's two custom models)

from engine.config import parse_config  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.training.evaluate import CPU_EVAL_BATCH, predict_probs  # noqa: E402

CASES = [
    ("small CNN (width 16)", 28, 1, 2000, MODELS["small_cnn"]),
    ("small ResNet (16-32-64)", 28, 1, 2000, MODELS["resnet"]),
    ("small ResNet (16-32-64)", 32, 3, 1024, MODELS["resnet"]),
    (
        "ResNet-18 (CIFAR)",
        32,
        3,
        256,
        {"source": "custom", "name": "resnet", "widths": [64, 128, 256, 512], "depths": [2, 2, 2, 2]},
    ),
    ("mobilenetv3_small_100", 64, 3, 1024, {"source": "timm", "name": "mobilenetv3_small_100"}),
]


def per_1000(model, x, channels: int, batch: int, repeats: int) -> float:
    mean, std = [0.5] * channels, [0.25] * channels
    cpu = torch.device("cpu")
    predict_probs(model, x, mean, std, cpu, batch_size=batch, channels_last=True)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predict_probs(model, x, mean, std, cpu, batch_size=batch, channels_last=True)
        best = min(best, time.perf_counter() - started)
    return best / len(x) * 1e6  # ms per 1,000 images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="64,128,256,512")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    sizes = sorted({int(s) for s in a.sizes.split(",")} | {CPU_EVAL_BATCH, 512})
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}"
    )
    print("| model | input | " + " | ".join(f"batch {s}" for s in sizes) + f" | 512 ÷ {CPU_EVAL_BATCH} |")
    print("|---|---|" + "---|" * len(sizes) + "---|")
    rng = np.random.default_rng(0)
    for label, size, channels, n, model_cfg in CASES:
        cfg = parse_config({"data": {"dataset": "digits"}, "model": model_cfg})
        model = build_model(cfg.model, channels, 10).to(memory_format=torch.channels_last)
        x = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
        ms = {s: per_1000(model, x, channels, s, a.repeats) for s in sizes}
        cells = " | ".join(f"{ms[s]:.0f} ms" for s in sizes)
        print(f"| {label} | {size}×{size}×{channels} | {cells} | **{ms[512] / ms[CPU_EVAL_BATCH]:.2f}×** |", flush=True)
    print("(wall time per 1,000 images, best of the repeats)")


if __name__ == "__main__":
    main()
