"""LR finder cost: the wall time of `find_lr` against one training epoch of the same config.

    .venv/bin/python bench/bench_lr_finder.py [--steps 300] [--device cpu|cuda] [--json out.json]

Per dataset (the digits; Fashion-MNIST when /usr/share/datasets/fashion-mnist exists), with small_cnn,
AdamW, batch 64, no augmentation: (a) `engine.training.lr_finder.find_lr` end to end (building the run,
loading the data, the sweep of --steps steps); (b) `engine.training.loop.train` for one epoch, end to end,
and that epoch's own `train/epoch_seconds`. Prints the ratio (a)/(b). A warm-up run first keeps the process's
one-time costs out of both. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.config import parse_config  # noqa: E402
from engine.data import BUILTIN_SPECS, FASHION_MNIST_DIR  # noqa: E402
from engine.sinks import EventSink  # noqa: E402
from engine.training.loop import train  # noqa: E402
from engine.training.lr_finder import find_lr  # noqa: E402


class EpochSeconds(EventSink):
    def __init__(self):
        self.seconds = None

    def on_epoch_end(self, epoch, metrics, confusion):
        self.seconds = metrics[("train", "epoch_seconds")]


def config(dataset: str, device: str):
    return parse_config(
        {
            "data": {"dataset": dataset},
            "model": {"source": "custom", "name": "small_cnn"},
            "optim": {"name": "adamw", "lr": 3e-3},
            "schedule": {"name": "none"},
            "train": {"epochs": 1, "batch_size": 64, "seed": 0, "device": device},
            "eval": {"tta": []},
        }
    )


def warm_up(device: str) -> None:
    """Pay the process's one-time costs (imports torch.optim pulls in lazily, kernel set-up) outside the timings."""
    cfg = config("digits", device).model_copy(deep=True)
    cfg.train.max_steps_per_epoch = 2
    find_lr(cfg, BUILTIN_SPECS["digits"], num_steps=2)
    with tempfile.TemporaryDirectory() as run_dir:
        train(cfg, BUILTIN_SPECS["digits"], run_dir, EventSink())


def bench(dataset: str, steps: int, device: str) -> dict:
    cfg = config(dataset, device)
    spec = BUILTIN_SPECS[dataset]
    t0 = time.perf_counter()
    result = find_lr(cfg, spec, num_steps=steps)
    finder_s = time.perf_counter() - t0
    sink = EpochSeconds()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        status = train(cfg, spec, run_dir, sink).status
    epoch_total_s = time.perf_counter() - t0
    return {
        "dataset": dataset,
        "finder_steps": len(result.lrs),
        "suggested_lr": result.suggested_lr,
        "rule": result.rule,
        "finder_s": finder_s,
        "epoch_total_s": epoch_total_s,
        "epoch_train_s": sink.seconds,
        "train_status": status,
        "ratio_total": finder_s / epoch_total_s,
        "ratio_train": finder_s / sink.seconds if sink.seconds else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    datasets = ["digits"] + (["fashion_mnist"] if FASHION_MNIST_DIR.exists() else [])
    print(
        f"{datetime.date.today()} {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {args.device}, torch {torch.__version__}"
    )
    warm_up(args.device)
    rows = []
    for ds in datasets:
        r = bench(ds, args.steps, args.device)
        rows.append(r)
        print(
            f"{ds:14s} lr-find {r['finder_steps']} steps {r['finder_s']:7.1f} s (suggests {r['suggested_lr']:.2g}, "
            f"{r['rule']}) | one epoch: {r['epoch_total_s']:7.1f} s end to end, {r['epoch_train_s']:7.1f} s training "
            f"| ratio {r['ratio_total']:.2f} (end to end), {r['ratio_train']:.2f} (vs training time)",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
