"""Training throughput: the users' loop against the engine's fast path, and ResNet-18 FLOP/s.

    .venv/bin/python bench/bench_train.py [--device cpu|cuda] [--quick] [--json out.json]

In one process, on the same data, model, optimizer, schedule and epochs:
  (a) baseline: the loop from the users' notebooks: a torch DataLoader over PIL images with per-image
      torchvision transforms (RandomHorizontalFlip, RandomCrop with padding, ToTensor, Normalize),
      fp32, eager, `loss.item()` every step;
  (b) engine: `engine.training.loop.train` itself (the real engine code, a recording sink instead of the DB)
      with the same augmentation as HorizontalFlip + PadRandomCrop, on the fast path, with bf16
      autocast and channels_last on CUDA.
It prints images/s, the share of step time spent waiting for data, the time to a target validation
accuracy on Fashion-MNIST and the ratio (b)/(a); then ResNet-18 (CIFAR variant: our custom resnet,
widths 64-128-256-512, depths 2-2-2-2) on synthetic 32x32 uint8 images through the engine: images/s,
FLOPs per training image (torch.utils.flop_counter), achieved TFLOP/s and its share of a measured
matmul peak (bf16 on CUDA, fp32 on CPU). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.config import parse_config  # noqa: E402
from engine.data import FASHION_CLASSES, FASHION_MNIST_DIR, DatasetSpec, load_arrays, make_splits  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.sinks import ConsoleSink, EventSink, MultiSink  # noqa: E402
from engine.training import fastpath  # noqa: E402
from engine.training.loop import train  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)


# ------------------------------------------------------------------------------- settings
def settings(args) -> dict:
    """What each comparison runs with: small on CPU (--quick), full Fashion-MNIST on a GPU."""
    cuda = args.device == "cuda"
    s = {
        "model": args.model or ("resnet18" if cuda else "small_cnn"),
        "sizes": [int(v) for v in (args.image_sizes or ("40,96" if cuda else "28")).split(",")],
        "train_samples": args.train_samples or (None if cuda else (10000 if args.quick else 20000)),
        "epochs": args.epochs or (4 if cuda else (4 if args.quick else 5)),
        "batch_size": args.batch_size or (512 if cuda else 128),
        "lr": 3e-3,
        "target_acc": args.target_acc or (0.90 if cuda else (0.78 if args.quick else 0.80)),
        "workers": args.workers if args.workers is not None else min(4, os.cpu_count() or 1),
        "amp": "bf16" if cuda else "off",
        # channels_last: measured faster on both (CPU: small_cnn 0.41 -> 0.28 ms per image on the 2-core VM)
        "channels_last": True if args.channels_last is None else args.channels_last,
        "compile": args.compile,
        "resnet_images": 50_000 if cuda else 512,
        "resnet_batch": 512 if cuda else 32,
        "resnet_steps": None if cuda else 3,  # steps per epoch on CPU: ResNet-18 trains ~15 images/s there
        "resnet_epochs": 3 if cuda else 2,
    }
    return s


def model_section(name: str) -> dict:
    if name == "resnet18":
        return {"source": "custom", "name": "resnet", "widths": [64, 128, 256, 512], "depths": [2, 2, 2, 2]}
    if name == "small_cnn":
        return {"source": "custom", "name": "small_cnn", "widths": [16]}
    raise SystemExit(f"unknown --model {name} (resnet18 or small_cnn)")


# ------------------------------------------------------------------------------- (a) the users' loop
class PILImages(torch.utils.data.Dataset):
    """What the notebooks do: a list of PIL images, a torchvision transform per image."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        from PIL import Image

        mode = "L" if x.shape[-1] == 1 else "RGB"
        self.images = [Image.fromarray(im[..., 0] if mode == "L" else im, mode) for im in x]
        self.labels = [int(v) for v in y]
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def users_loop(splits, cfg, s, device, log) -> dict:
    import torchvision.transforms as T

    size, pad = splits.image_size, max(1, splits.image_size // 8)
    tf = T.Compose(
        [T.RandomHorizontalFlip(), T.RandomCrop(size, padding=pad), T.ToTensor(), T.Normalize(splits.mean, splits.std)]
    )
    tf_val = T.Compose([T.ToTensor(), T.Normalize(splits.mean, splits.std)])
    train_ds = PILImages(splits.train_x, splits.train_y, tf)
    val_ds = PILImages(splits.val_x, splits.val_y, tf_val)
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=s["batch_size"],
        shuffle=True,
        num_workers=s["workers"],
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=1000, num_workers=0)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, splits.channels, splits.num_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s["epochs"])
    loss_fn = torch.nn.CrossEntropyLoss()
    start, epochs = time.perf_counter(), []
    for epoch in range(s["epochs"]):
        model.train()
        running_loss, seen, wait = 0.0, 0, 0.0
        t0 = tw = time.perf_counter()
        for images, labels in loader:
            wait += time.perf_counter() - tw
            images, labels = images.to(device), labels.to(device)
            opt.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            opt.step()
            running_loss += loss.item()
            seen += len(labels)
            tw = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        sched.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                correct += (model(images.to(device)).argmax(1).cpu() == labels).sum().item()
        epochs.append(
            {
                "images_per_sec": seen / train_s,
                "data_wait": wait / train_s,
                "val_acc": correct / len(val_ds),
                "elapsed_s": time.perf_counter() - start,
            }
        )
        log(
            f"  baseline epoch {epoch + 1}: {seen / train_s:,.0f} img/s, data wait {wait / train_s:.0%}, "
            f"val acc {correct / len(val_ds):.4f}"
        )
    return {"epochs": epochs}


# ------------------------------------------------------------------------------- (b) the engine
class Recorder(EventSink):
    def __init__(self):
        self.started, self.epochs, self.data_path, self.status = None, [], None, None

    def on_status(self, status, **info):
        self.status = (status, info.get("error"))
        if status == "running":
            self.started, self.data_path = time.perf_counter(), info.get("data_path")

    def on_epoch_end(self, epoch, metrics, confusion):
        self.epochs.append(
            {
                "images_per_sec": metrics[("train", "images_per_sec")],
                "data_wait": metrics[("train", "data_wait")],
                "epoch_seconds": metrics[("train", "epoch_seconds")],
                "val_acc": metrics.get(("val", "acc")),
                "elapsed_s": time.perf_counter() - self.started,
            }
        )


def engine_config(s, dataset_name, data: dict, model: dict, epochs, batch, steps=None, padding=4) -> dict:
    return {
        "name": "bench",
        "data": {"dataset": dataset_name, **data},
        "model": model,
        "optim": {"name": "adamw", "lr": s["lr"]},
        "schedule": {"name": "cosine"},
        "augment": {
            "train": [
                {"name": "HorizontalFlip", "p": 0.5},
                {"name": "PadRandomCrop", "p": 1.0, "params": {"padding": padding}},
            ]
        },
        "train": {
            "epochs": epochs,
            "batch_size": batch,
            "seed": 0,
            "device": s["device"],
            "amp": s["amp"],
            "channels_last": s["channels_last"],
            "compile": s["compile"],
            "max_steps_per_epoch": steps,
        },
        "eval": {"tta": ["none"]},
    }


def run_engine(cfg_dict, spec, verbose) -> Recorder:
    rec = Recorder()
    sink = MultiSink(rec, ConsoleSink(sys.stderr)) if verbose else rec
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(parse_config(cfg_dict), spec, run_dir, sink)
    if result.status != "completed":
        raise SystemExit(f"engine run {result.status}: {rec.status[1]}")
    return rec


def augmentation_share(cfg_dict, splits, device, epoch_seconds) -> float:
    """Time to produce one epoch of fast-path batches alone, as a share of a training epoch. On CUDA the
    augmentation runs on the training stream, so host-side data wait cannot see it; this does."""
    plan = fastpath.plan(parse_config(cfg_dict), splits, device)
    if not plan.usable:
        return float("nan")
    plan.load()
    for _ in plan.batches(0, 0):  # warm-up
        break
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _xb, _ in plan.batches(1, 1):
        pass
    sync()
    return (time.perf_counter() - t) / epoch_seconds


# ------------------------------------------------------------------------------- summaries
def steady(epochs, key):
    """The median over epochs after the first (the first includes cudnn autotuning, compilation, worker start)."""
    vals = [e[key] for e in (epochs[1:] if len(epochs) > 1 else epochs)]
    return statistics.median(vals)


def time_to(epochs, target):
    for e in epochs:
        if e["val_acc"] is not None and e["val_acc"] >= target:
            return e["elapsed_s"]
    return None


def fmt_s(v):
    return "not reached" if v is None else f"{v:.1f} s"


# ------------------------------------------------------------------------------- ResNet-18 FLOP/s
def flops_per_training_image(model_cfg: dict, channels: int, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    cfg = parse_config({"model": model_cfg})
    model = build_model(cfg.model, channels, 10)
    x = torch.randn(2, channels, size, size)
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
        loss.backward()
    return counter.get_total_flops() / 2


def matmul_peak(device) -> tuple[float, str]:
    """Measured dense matmul TFLOP/s: bf16 8192^3 on CUDA, fp32 2048^3 on CPU."""
    if device.type == "cuda":
        n, dtype = 8192, torch.bfloat16
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        reps = 20
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize()
        return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12, "bf16 matmul 8192^3"
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps = 5
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12, "fp32 matmul 2048^3"


def resnet_bench(s, device, workdir, verbose, log) -> dict:
    rng = np.random.default_rng(0)
    n = s["resnet_images"]
    path = Path(workdir) / "synthetic32.npz"
    np.savez(path, images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels=rng.integers(0, 10, n))
    model = model_section("resnet18")
    cfg = engine_config(
        s,
        "synthetic32",
        {"val_fraction": 0.02, "test_fraction": 0.02},
        model,
        s["resnet_epochs"],
        s["resnet_batch"],
        steps=s["resnet_steps"],
        padding=4,
    )
    log(
        f"ResNet-18 (CIFAR) on {n:,} synthetic 32x32x3 uint8 images, batch {s['resnet_batch']}, "
        f"{s['resnet_epochs']} epochs" + (f" of {s['resnet_steps']} steps" if s["resnet_steps"] else "")
    )
    rec = run_engine(cfg, DatasetSpec("npz", str(path)), verbose)
    fastpath.release()
    ips = rec.epochs[-1]["images_per_sec"]
    flops = flops_per_training_image(model, 3, 32)
    peak, peak_what = matmul_peak(device)
    achieved = flops * ips / 1e12
    return {
        "images_per_sec": ips,
        "data_wait": rec.epochs[-1]["data_wait"],
        "gflop_per_image": flops / 1e9,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_what": peak_what,
        "peak_share": achieved / peak,
        "data_path": rec.data_path,
    }


# ------------------------------------------------------------------------------- main
def environment(device) -> dict:
    import albumentations
    import timm
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name = f"CPU {name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return {
        "device": name,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "albumentations": albumentations.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def fashion_bench(s, size, device, fashion_dir, verbose, log) -> dict:
    spec = DatasetSpec("idx", str(fashion_dir), {"class_names": FASHION_CLASSES})
    data = {"image_size": None if size == 28 else size, "max_train_samples": s["train_samples"], "val_fraction": 0.1}
    model = model_section(s["model"])
    pad = max(1, size // 8)
    cfg_dict = engine_config(s, "fashion_mnist", data, model, s["epochs"], s["batch_size"], padding=pad)
    cfg = parse_config(cfg_dict)
    splits = make_splits(load_arrays(spec), cfg.data)
    log(
        f"Fashion-MNIST at {size}x{size}: {len(splits.train_y):,} train / {len(splits.val_y):,} val images, "
        f"model {s['model']}, batch {s['batch_size']}, {s['epochs']} epochs, pad-crop {pad} + flip"
    )
    log(f" (a) baseline: DataLoader + PIL/torchvision transforms, fp32, eager, {s['workers']} workers")
    base = users_loop(splits, cfg, s, device, log)
    log(f" (b) engine: amp {s['amp']}, channels_last {s['channels_last']}, compile {s['compile']}")
    rec = run_engine(cfg_dict, spec, verbose)
    for i, e in enumerate(rec.epochs, 1):
        log(
            f"  engine epoch {i}: {e['images_per_sec']:,.0f} img/s, data wait {e['data_wait']:.1%}, val acc {e['val_acc']:.4f}"
        )
    aug_share = augmentation_share(cfg_dict, splits, device, steady(rec.epochs, "epoch_seconds"))
    fastpath.release()
    plain = None
    if s["plain_engine"]:  # the fast path alone: fp32, no channels_last, eager, to split the gain
        plain_dict = {
            **cfg_dict,
            "train": {**cfg_dict["train"], "amp": "off", "channels_last": False, "compile": False},
        }
        log(" (b0) engine, fast path only: fp32, no channels_last, eager")
        plain = run_engine(plain_dict, spec, verbose)
        fastpath.release()
        for i, e in enumerate(plain.epochs, 1):
            log(
                f"  engine (b0) epoch {i}: {e['images_per_sec']:,.0f} img/s, data wait {e['data_wait']:.1%}, val acc {e['val_acc']:.4f}"
            )
    out = {
        "size": size,
        "train_images": int(len(splits.train_y)),
        "engine_data_path": rec.data_path,
        "baseline": {
            "images_per_sec": steady(base["epochs"], "images_per_sec"),
            "data_wait": steady(base["epochs"], "data_wait"),
            "time_to_target_s": time_to(base["epochs"], s["target_acc"]),
            "final_val_acc": base["epochs"][-1]["val_acc"],
            "epochs": base["epochs"],
        },
        "engine": {
            "images_per_sec": steady(rec.epochs, "images_per_sec"),
            "data_wait": steady(rec.epochs, "data_wait"),
            "augmentation_share": aug_share,
            "time_to_target_s": time_to(rec.epochs, s["target_acc"]),
            "final_val_acc": rec.epochs[-1]["val_acc"],
            "epochs": rec.epochs,
        },
    }
    if plain is not None:
        out["engine_fast_path_only"] = {
            "images_per_sec": steady(plain.epochs, "images_per_sec"),
            "data_wait": steady(plain.epochs, "data_wait"),
            "time_to_target_s": time_to(plain.epochs, s["target_acc"]),
            "final_val_acc": plain.epochs[-1]["val_acc"],
            "epochs": plain.epochs,
        }
    out["speedup_images_per_sec"] = out["engine"]["images_per_sec"] / out["baseline"]["images_per_sec"]
    tb, te = out["baseline"]["time_to_target_s"], out["engine"]["time_to_target_s"]
    out["speedup_time_to_target"] = tb / te if tb and te else None
    return out


def report(env, s, fashion, resnet, device) -> str:
    cuda = device.type == "cuda"
    lines = [
        f"device: {env['device']}",
        f"date: {env['date']}",
        f"versions: python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
        f"timm {env['timm']}, albumentations {env['albumentations']}",
    ]
    if env.get("load_average"):
        lines.append("load average at the end (1/5/15 min): " + " / ".join(f"{v:.1f}" for v in env["load_average"]))
    lines += [
        "",
        f"Fashion-MNIST, model {s['model']}, batch {s['batch_size']}, {s['epochs']} epochs, "
        f"target val acc {s['target_acc']}, baseline DataLoader workers {s['workers']}; "
        f"engine amp {s['amp']}, channels_last {s['channels_last']}, compile {s['compile']}",
        "",
        "| image size | train images | loop | images/s | data wait | aug. share | time to target | final val acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in fashion:
        b, e = f["baseline"], f["engine"]
        lines.append(
            f"| {f['size']}x{f['size']} | {f['train_images']:,} | (a) baseline | {b['images_per_sec']:,.0f} | "
            f"{b['data_wait']:.1%} | - | {fmt_s(b['time_to_target_s'])} | {b['final_val_acc']:.4f} |"
        )
        if "engine_fast_path_only" in f:
            e0 = f["engine_fast_path_only"]
            lines.append(
                f"| | | (b0) engine, fast path only (fp32, NCHW) | {e0['images_per_sec']:,.0f} | {e0['data_wait']:.1%} | | "
                f"{fmt_s(e0['time_to_target_s'])} | {e0['final_val_acc']:.4f} |"
            )
        lines.append(
            f"| | | (b) engine (amp {s['amp']}, channels_last {s['channels_last']}) | {e['images_per_sec']:,.0f} | "
            f"{e['data_wait']:.1%} | {e['augmentation_share']:.1%} | {fmt_s(e['time_to_target_s'])} | {e['final_val_acc']:.4f} |"
        )
        ttt = f"{f['speedup_time_to_target']:.2f}x" if f["speedup_time_to_target"] else "n/a"
        lines.append(f"| | | **(b)/(a)** | **{f['speedup_images_per_sec']:.2f}x** | | | **{ttt}** | |")
    lines += [
        "",
        "images/s and data wait: median over epochs 2.. (training loop only); aug. share: one epoch of "
        "fast-path batches produced alone, as a share of a training epoch; time to target: wall time from the "
        "start of epoch 1 to the end of the first epoch whose validation accuracy reaches the target "
        "(validation and checkpoints included).",
        "",
        "| ResNet-18 (CIFAR), 32x32 synthetic uint8 | value |",
        "|---|---|",
        f"| images/s (engine, fast path, amp {s['amp']}) | {resnet['images_per_sec']:,.0f} |",
        f"| data wait | {resnet['data_wait']:.1%} |",
        f"| FLOPs per training image (fwd + bwd, FlopCounterMode) | {resnet['gflop_per_image']:.2f} GFLOP |",
        f"| achieved | {resnet['achieved_tflops']:.3f} TFLOP/s |",
        f"| measured peak ({resnet['peak_what']}) | {resnet['peak_tflops']:.2f} TFLOP/s |",
        f"| share of peak | {resnet['peak_share']:.1%} |",
    ]
    lines += ["", "targets:"]
    best = max(f["speedup_images_per_sec"] for f in fashion)
    if cuda:
        per_size = ", ".join(f"{f['speedup_images_per_sec']:.1f}x at {f['size']} px" for f in fashion)
        met = min(f["speedup_images_per_sec"] for f in fashion) >= 10
        lines.append(f"- >= 10x the baseline's images/s on one H100: {per_size} -> {'met' if met else 'NOT met'}")
        lines.append(
            f"- >= 100k images/s ResNet-18-CIFAR bf16: {resnet['images_per_sec']:,.0f} -> "
            f"{'met' if resnet['images_per_sec'] >= 100_000 else 'NOT met'}"
        )
    else:
        lines.append(f"- >= 2x the baseline on CPU: {best:.2f}x -> {'met' if best >= 2 else 'NOT met'}")
    worst_wait = max(max(f["engine"]["data_wait"] for f in fashion), resnet["data_wait"])
    lines.append(
        f"- engine data wait < 5% of step time: worst {worst_wait:.1%} -> {'met' if worst_wait < 0.05 else 'NOT met'}"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes on a 2-core CPU)")
    p.add_argument(
        "--model",
        choices=["small_cnn", "resnet18"],
        help="Fashion-MNIST model (default: resnet18 on CUDA, small_cnn on CPU)",
    )
    p.add_argument(
        "--image-sizes", help="comma-separated, e.g. 40,96 (Fashion-MNIST is resized; default 40,96 on CUDA, 28 on CPU)"
    )
    p.add_argument("--train-samples", type=int, help="cap on training images (default: all on CUDA)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--target-acc", type=float)
    p.add_argument("--workers", type=int, help="baseline DataLoader workers (default: min(4, CPU cores))")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's model")
    p.add_argument(
        "--fashion-dir", default=str(FASHION_MNIST_DIR), help="folder with the four Fashion-MNIST .gz IDX files"
    )
    p.add_argument("--skip-resnet", action="store_true")
    p.add_argument(
        "--no-plain-engine", action="store_true", help="skip the (b0) run: fast path alone, fp32, no channels_last"
    )
    p.add_argument("--json", help="also write all numbers here")
    p.add_argument("--verbose", action="store_true", help="the engine's own log on stderr")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    if not Path(args.fashion_dir).is_dir():
        raise SystemExit(
            f"Fashion-MNIST not found in {args.fashion_dir}: apt-get install dataset-fashion-mnist, "
            "or copy its four .gz files there and pass --fashion-dir"
        )
    s = settings(args)
    s["device"] = args.device
    s["plain_engine"] = not args.no_plain_engine

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    fashion = [fashion_bench(s, size, device, Path(args.fashion_dir), args.verbose, log) for size in s["sizes"]]
    with tempfile.TemporaryDirectory() as workdir:
        resnet = resnet_bench(s, device, workdir, args.verbose, log) if not args.skip_resnet else None
    env = environment(device)
    if resnet is None:
        resnet = {
            k: float("nan")
            for k in ("images_per_sec", "data_wait", "gflop_per_image", "achieved_tflops", "peak_tflops", "peak_share")
        } | {"peak_what": "skipped"}
    print(report(env, s, fashion, resnet, device))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"environment": env, "settings": s, "fashion_mnist": fashion, "resnet18_cifar": resnet},
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
