"""Per-image history cost: bytes stored per epoch, and the time to hand over and write one epoch's
validation predictions against that epoch's training time.

    .venv/bin/python bench/bench_image_history.py [--dataset fashion_mnist] [--device cpu|cuda] [--json out.json]

(a) Size: 10,000 predictions packed (engine.image_history.pack), and the growth of a real SQLite file
    (the migrated schema) per epoch row, over 50 epochs of 10,000 images.
(b) Time: one real epoch of `engine.training.loop.train` (small_cnn, AdamW, batch 64, no augmentation) with
    the DB sink on a fresh SQLite file: the epoch's own `train/epoch_seconds`, and around it the per-image
    history's share: from_probs + pack on the epoch's real validation probabilities, and add_epoch with the
    predictions minus add_epoch without them (median of 15 each, same rows, same file). With --max-steps the
    epoch stops early and its time is scaled to the full epoch's number of steps (on a busy machine).
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from db import queries, store  # noqa: E402
from db.session import init_db  # noqa: E402
from db.sink import DBSink  # noqa: E402
from engine import image_history as ih  # noqa: E402
from engine.config import parse_config  # noqa: E402
from engine.data import BUILTIN_SPECS, FASHION_MNIST_DIR  # noqa: E402
from engine.training.loop import train  # noqa: E402


class KeepProbs(DBSink):
    """The DB sink, also keeping the last epoch's predictions and metrics for the timings below."""

    train_images = 0

    def on_predictions(self, epoch, split, pred, confidence):
        self.kept = (pred, confidence)
        super().on_predictions(epoch, split, pred, confidence)

    def on_log(self, message):
        if " train / " in message:  # "<n> train / <m> val / ..."
            self.train_images = int(message.split(" train / ")[0].split()[-1])

    def on_epoch_end(self, epoch, metrics, confusion):
        self.metrics, self.confusion = metrics, confusion
        super().on_epoch_end(epoch, metrics, confusion)


def _median_ms(fn, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def size_bench(root: Path) -> dict:
    rng = np.random.default_rng(0)
    pred, conf = rng.integers(0, 10, 10_000), rng.random(10_000)
    pb, cb = ih.pack(pred, conf)
    url = f"sqlite:///{root / 'size.db'}"
    init_db(url)
    run_id = store.create_run(url, {"data": {"dataset": "x"}, "train": {"epochs": 50}})
    path = root / "size.db"

    def file_bytes():  # the database file itself, after moving the write-ahead log into it
        with sqlite3.connect(path) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return os.path.getsize(path)

    store.add_epoch(url, run_id, 0, {("val", "acc"): 0.5})
    before = file_bytes()
    for epoch in range(1, 51):
        store.add_epoch_predictions(url, run_id, epoch, "val", rng.integers(0, 10, 10_000), rng.random(10_000))
    grown = file_bytes() - before
    return {"packed_bytes_10k": len(pb) + len(cb), "sqlite_bytes_per_epoch_10k": grown / 50}


def time_bench(root: Path, dataset: str, device: str, max_steps: int | None = None) -> dict:
    url = f"sqlite:///{root / 'lab.db'}"
    init_db(url)
    cfg = parse_config(
        {
            "data": {"dataset": dataset},
            "model": {"source": "custom", "name": "small_cnn"},
            "optim": {"name": "adamw", "lr": 3e-3},
            "schedule": {"name": "none"},
            "train": {"epochs": 1, "batch_size": 64, "seed": 0, "device": device, "max_steps_per_epoch": max_steps},
            "eval": {"tta": []},
        }
    )
    run_id = store.create_run(url, cfg.model_dump(mode="json"))
    sink = KeepProbs(url, run_id)
    spec = BUILTIN_SPECS[dataset]
    t0 = time.perf_counter()
    result = train(cfg, spec, root / "run", sink)
    wall = time.perf_counter() - t0
    assert result.status == "completed", result
    epoch_s = sink.metrics[("train", "epoch_seconds")]
    steps = sink.metrics[("train", "images_per_sec")] * epoch_s / 64  # batches trained this epoch
    full_steps = -(-sink.train_images // 64)
    pred, conf = sink.kept
    n = len(pred)
    probs = torch.rand(n, 10)
    hand_over_ms = _median_ms(lambda: ih.pack(*ih.from_probs(probs)))
    rows = {k: v for k, v in sink.metrics.items()}
    with_ms = _median_ms(
        lambda: store.add_epoch(url, run_id, 1, rows, sink.confusion, predictions={"val": (pred, conf)})
    )
    without_ms = _median_ms(lambda: store.add_epoch(url, run_id, 1, rows, sink.confusion))
    assert queries.prediction_epochs(url, run_id) == [1]
    write_ms = max(0.0, with_ms - without_ms)
    return {
        "dataset": dataset,
        "device": device,
        "val_images": n,
        "train_images": sink.train_images,
        "steps_trained": round(steps),
        "epoch_seconds": epoch_s,
        "full_epoch_seconds": epoch_s * full_steps / max(steps, 1),  # = epoch_seconds unless --max-steps
        "train_wall_seconds": wall,
        "hand_over_ms": hand_over_ms,
        "add_epoch_with_ms": with_ms,
        "add_epoch_without_ms": without_ms,
        "history_write_ms": write_ms,
        "share_of_epoch_pct": 100 * (hand_over_ms + write_ms) / 1000 / (epoch_s * full_steps / max(steps, 1)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    default = "fashion_mnist" if Path(FASHION_MNIST_DIR).exists() else "digits"
    ap.add_argument("--dataset", default=default)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-steps", type=int, help="train this many steps and scale the epoch time to a full one")
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            **size_bench(Path(tmp)),
            **time_bench(Path(tmp), args.dataset, args.device, args.max_steps),
        }
    for k, v in out.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
