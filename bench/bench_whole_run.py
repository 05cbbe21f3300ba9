"""Whole runs, process start to final result: the engine against the users' plain PyTorch script.

    .venv/bin/python bench/bench_whole_run.py [--rounds 5] [--models small_cnn,resnet] [--epochs 4]
                                              [--train 6000] [--val 2000] [--test 2000] [--json out.json]

Both sides are subprocesses started the same way, on the same Fashion-MNIST subset, the same train /
validation / test images, the same model class and initial weights (seed), AdamW 3e-3 (weight decay
0.01), cosine LR per epoch, batch 128, random horizontal flip + pad-and-crop (padding size/8):
  engine: `python -m engine train config.yaml --db sqlite:///fresh.db` (validation, preflight against
          the data, a run row, heartbeats, per-epoch DB rows and checkpoints, the end-of-run test/val
          evaluation), on its fast path;
  plain:  bench/plain_loop.py (DataLoader over PIL images with torchvision transforms, 2 workers, a
          validation pass per epoch, test at the end, torch.save of the weights).
Rounds are interleaved A/B (the order alternates) with seed = round, so slow spells of a shared machine
hit both. Per run: wall time from Popen to exit, CPU seconds and peak RSS (wait4: the process and its
reaped children, e.g. DataLoader workers; RSS is the largest single process), time to the first
training loss (the first batch in hand and its forward pass; the engine's is reported by a probe that
wraps TrainHooks.on_loss, the plain script prints its own), and time to a fixed validation accuracy
(when the parent reads the epoch's line). Ratios are engine / plain, median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "small_cnn": {"source": "custom", "name": "small_cnn", "widths": [16]},
    "resnet": {"source": "custom", "name": "resnet", "widths": [16, 32, 64], "depths": [1, 1, 1]},
}
ENGINE_EPOCH = re.compile(r"epoch (\d+) .*val_acc=([0-9.]+)")
PLAIN_EPOCH = re.compile(r"@epoch (\d+) val_acc ([0-9.]+)")
TEST_ACC = re.compile(r"^(?:@test_acc |\[[0-9:]+\] test \(best, epoch \d+\) acc=)([0-9.]+)")


# ------------------------------------------------------------------------------- the engine, probed
def probe_engine(argv: list[str]) -> None:
    """`python -m engine ARGV` in this process, printing `@first_loss T` at the first training loss."""
    import importlib.abc
    import importlib.util
    import runpy

    class Probe(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "engine.training.hooks":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run_module = spec.loader.exec_module

            def exec_module(module):
                run_module(module)
                base = module.TrainHooks.on_loss

                def on_loss(hooks, step, loss):
                    if step == 0:
                        print(f"@first_loss {time.time():.4f}", flush=True)
                    return base(hooks, step, loss)

                module.TrainHooks.on_loss = on_loss

            spec.loader.exec_module = exec_module
            return spec

    sys.path.insert(0, str(ROOT))
    sys.meta_path.insert(0, Probe())
    sys.argv = ["engine", *argv]
    runpy.run_module("engine", run_name="__main__", alter_sys=True)


# ------------------------------------------------------------------------------- data
def prepare(workdir: Path, n_train: int, n_val: int, n_test: int, fashion_dir=None) -> tuple[Path, Path, float]:
    """engine.npz (train+val pool, test) for the engine, which splits it itself; plain.npz with exactly
    the engine's split (its own make_splits), for the plain script."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from engine.config import parse_config
    from engine.data import FASHION_MNIST_DIR, DatasetSpec, load_arrays, make_splits, stratified_split

    full = load_arrays(DatasetSpec("idx", str(fashion_dir or FASHION_MNIST_DIR)))
    pool = n_train + n_val
    _, keep = stratified_split(full.train_y, pool / len(full.train_y), 123)
    _, keep_test = stratified_split(full.test_y, n_test / len(full.test_y), 321)
    engine_npz = workdir / "engine.npz"
    np.savez(
        engine_npz,
        x_train=full.train_x[keep],
        y_train=full.train_y[keep],
        x_test=full.test_x[keep_test],
        y_test=full.test_y[keep_test],
    )
    val_fraction = n_val / pool
    cfg = parse_config({"data": {"dataset": f"npz:{engine_npz}", "val_fraction": val_fraction}})
    s = make_splits(load_arrays(DatasetSpec("npz", str(engine_npz))), cfg.data)
    plain_npz = workdir / "plain.npz"
    np.savez(
        plain_npz,
        train_x=s.train_x,
        train_y=s.train_y,
        val_x=s.val_x,
        val_y=s.val_y,
        test_x=s.test_x,
        test_y=s.test_y,
    )
    return engine_npz, plain_npz, val_fraction


def engine_config(
    data_ref: str, val_fraction: float, model: str, epochs: int, seed: int, augment: bool, amp: str = "off"
) -> dict:
    return {
        "name": f"whole-run {model} seed {seed}",
        "data": {"dataset": data_ref, "val_fraction": val_fraction},
        "model": MODELS[model],
        "augment": {
            "train": [
                {"name": "HorizontalFlip", "p": 0.5},
                {"name": "PadRandomCrop", "p": 1.0, "params": {"padding": 3}},
            ]
            if augment
            else []
        },
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01},
        "schedule": {"name": "cosine"},
        "train": {"epochs": epochs, "batch_size": 128, "seed": seed, "device": "cpu", "amp": amp},
        "eval": {"tta": ["none"]},
    }


# ------------------------------------------------------------------------------- one timed process
def timed(cmd: list[str], env: dict, epoch_re: re.Pattern, target: float) -> dict:
    t0 = time.time()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    out = {"first_loss_s": None, "val_acc": {}, "target_s": None, "lines": []}

    def read():
        for line in proc.stdout:
            now = time.time()
            out["lines"].append(line.rstrip())
            if line.startswith("@first_loss"):
                out["first_loss_s"] = float(line.split()[1]) - t0
            elif m := epoch_re.search(line):
                acc = float(m.group(2))
                out["val_acc"][int(m.group(1))] = acc
                if out["target_s"] is None and acc >= target:
                    out["target_s"] = now - t0
            elif m := TEST_ACC.search(line):
                out["test_acc"] = float(m.group(1))

    reader = threading.Thread(target=read)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n" + "\n".join(out["lines"][-30:]))
    out.update(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_mb=usage.ru_maxrss / 1024)
    out.pop("lines")
    return out


def run_engine(work: Path, data_ref: str, val_fraction: float, model: str, epochs: int, seed: int, a) -> dict:
    import yaml

    run = Path(tempfile.mkdtemp(dir=work, prefix="engine-"))
    url = f"sqlite:///{run / 'lab.db'}"
    env = dict(os.environ, LAB_RUNS_DIR=str(run / "runs"), PYTHONUNBUFFERED="1")
    env.pop("LAB_DB_URL", None)
    subprocess.run(
        [sys.executable, "-m", "engine", "init", "--db", url], cwd=ROOT, env=env, check=True, capture_output=True
    )
    cfg = run / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(engine_config(data_ref, val_fraction, model, epochs, seed, not a.no_augment, a.engine_amp))
    )
    cmd = [sys.executable, __file__, "--probe-engine", "train", str(cfg), "--db", url]
    return timed(cmd, env, ENGINE_EPOCH, a.target)


def run_plain(work: Path, plain_npz: Path, model: str, epochs: int, seed: int, a) -> dict:
    out = Path(tempfile.mkdtemp(dir=work, prefix="plain-"))
    cmd = [sys.executable, str(ROOT / "bench" / "plain_loop.py"), "--data", str(plain_npz), "--model", model]
    cmd += ["--epochs", str(epochs), "--seed", str(seed), "--workers", str(a.workers), "--out", str(out)]
    if a.no_augment:
        cmd.append("--no-augment")
    return timed(cmd, dict(os.environ, PYTHONUNBUFFERED="1"), PLAIN_EPOCH, a.target)


# ------------------------------------------------------------------------------- report
def ratio_rows(rounds: list[dict]) -> dict:
    keys = ("wall_s", "cpu_s", "peak_rss_mb", "first_loss_s", "target_s")
    rows = {}
    for k in keys:
        pairs = [(r["engine"][k], r["plain"][k]) for r in rounds]
        ratios = [e / p for e, p in pairs if e is not None and p]
        rows[k] = {
            "engine_median": statistics.median([e for e, _ in pairs if e is not None])
            if any(e for e, _ in pairs)
            else None,
            "plain_median": statistics.median([p for _, p in pairs if p is not None])
            if any(p for _, p in pairs)
            else None,
            "ratio_median": statistics.median(ratios) if ratios else None,
            "ratios": ratios,
            "reached": f"{sum(e is not None for e, _ in pairs)}/{sum(p is not None for _, p in pairs)}",
        }
    return rows


def acc_rows(rounds: list[dict], epochs: int) -> list[tuple[int, float, float, float, float]]:
    out = []
    for e in range(1, epochs + 1):
        eng = [r["engine"]["val_acc"].get(e) for r in rounds]
        pl = [r["plain"]["val_acc"].get(e) for r in rounds]
        eng, pl = [v for v in eng if v is not None], [v for v in pl if v is not None]
        sd = statistics.stdev if len(eng) > 1 else (lambda v: 0.0)
        out.append((e, statistics.mean(eng), sd(eng), statistics.mean(pl), sd(pl)))
    return out


def fmt(v, unit="s"):
    if v is None:
        return "–"
    return f"{v:.0f} MB" if unit == "MB" else f"{v:.1f} s"


def report(model: str, rounds: list[dict], epochs: int, target: float) -> str:
    rows = ratio_rows(rounds)
    names = {
        "wall_s": ("whole run (wall)", "s", 0.7),
        "cpu_s": ("CPU seconds", "s", None),
        "peak_rss_mb": ("peak RSS", "MB", None),
        "first_loss_s": ("start to first batch (first loss)", "s", 1.0),
        "target_s": (f"start to val acc ≥ {target}", "s", 0.6),
    }
    lines = [f"\n{model}: {len(rounds)} rounds (seeds 0..{len(rounds) - 1}), {epochs} epochs"]
    lines.append("| measure | engine (median) | plain (median) | engine ÷ plain (median) | target |")
    lines.append("|---|---|---|---|---|")
    for k, (label, unit, goal) in names.items():
        r = rows[k]
        ratio = "–" if r["ratio_median"] is None else f"**{r['ratio_median']:.2f}×**"
        spread = "" if not r["ratios"] else f" ({min(r['ratios']):.2f}–{max(r['ratios']):.2f})"
        extra = f", reached {r['reached']}" if k == "target_s" else ""
        met = "" if goal is None or r["ratio_median"] is None else (" met" if r["ratio_median"] <= goal else " missed")
        goal_s = "" if goal is None else f"≤ {goal}×{met}"
        lines.append(
            f"| {label} | {fmt(r['engine_median'], unit)} | {fmt(r['plain_median'], unit)} | {ratio}{spread}{extra} | {goal_s} |"
        )
    lines.append("\n| epoch | engine val acc (mean ± sd) | plain val acc (mean ± sd) |")
    lines.append("|---|---|---|")
    for e, em, es, pm, ps in acc_rows(rounds, epochs):
        lines.append(f"| {e} | {em:.4f} ± {es:.4f} | {pm:.4f} ± {ps:.4f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe-engine":
        return probe_engine(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--models", default="small_cnn,resnet")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--target", type=float, default=0.75, help="validation accuracy to time")
    p.add_argument("--workers", type=int, default=2, help="the plain script's DataLoader workers")
    p.add_argument("--no-augment", action="store_true", help="both sides without augmentation (an ablation)")
    p.add_argument(
        "--engine-amp",
        default="off",
        choices=["off", "bf16"],
        help="the engine's train.amp (bf16: autocast on a CPU with native bfloat16; the plain script stays float32)",
    )
    p.add_argument(
        "--fashion-dir", help="folder with the four Fashion-MNIST .gz IDX files (default: the Debian package's)"
    )
    p.add_argument("--json")
    a = p.parse_args()
    try:
        import fastai  # noqa: F401

        fastai_note = "fastai is installed but not benchmarked here"
    except ImportError:
        fastai_note = "fastai is not installed: no fastai row"
    import torch

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU used",
        "load_avg_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fastai": fastai_note,
        "engine_amp": a.engine_amp,
    }
    print(json.dumps(env))
    results = {}
    with tempfile.TemporaryDirectory(prefix="whole-run-") as tmp:
        work = Path(tmp)
        engine_npz, plain_npz, val_fraction = prepare(work, a.train, a.val, a.test, a.fashion_dir)
        data_ref = f"npz:{engine_npz}"
        for model in a.models.split(","):
            rounds = []
            for seed in range(a.rounds):
                order = ("engine", "plain") if seed % 2 == 0 else ("plain", "engine")
                r = {}
                for side in order:
                    if side == "engine":
                        r[side] = run_engine(work, data_ref, val_fraction, model, a.epochs, seed, a)
                    else:
                        r[side] = run_plain(work, plain_npz, model, a.epochs, seed, a)
                e, pl = r["engine"], r["plain"]
                print(
                    f"{model} seed {seed}: engine {e['wall_s']:.1f} s (first loss {e['first_loss_s']:.1f} s, "
                    f"val {e['val_acc']}) | plain {pl['wall_s']:.1f} s (first loss {pl['first_loss_s']:.1f} s, "
                    f"val {pl['val_acc']}) | load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                rounds.append(r)
            results[model] = rounds
            print(report(model, rounds, a.epochs, a.target), flush=True)
    env["load_avg_end"] = os.getloadavg()
    print(json.dumps({"load_avg_end": env["load_avg_end"]}))
    if a.json:
        Path(a.json).write_text(json.dumps({"environment": env, "args": vars(a), "results": results}, indent=1))


if __name__ == "__main__":
    main()
