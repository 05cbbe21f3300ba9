"""Checkpoints: written atomically (temp file, fsync, rename), loaded with weights_only=True.

A run directory holds `last.pt` (every epoch, full state: the resume point), `best.pt` (the evaluated
weights, rewritten when the chosen metric improves) and `epoch_NNNN.pt` (every `checkpoint_every`
epochs, the newest `keep_last` kept; weights only unless `train.epoch_checkpoint` is full, and then a
resume point too).
Only tensors, numbers, strings, lists and dicts go in, so weights_only loading always works.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch


def save_atomic(obj: dict, path: Path) -> None:
    from engine.fileio import atomic_write

    with atomic_write(path) as f:
        torch.save(obj, f)


def load(path: Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def epoch_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / f"epoch_{epoch:04d}.pt"


def epoch_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in Path(run_dir).glob("epoch_*.pt"):
        m = re.fullmatch(r"epoch_(\d+)\.pt", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest keep_last epoch checkpoints; returns the removed paths."""
    ckpts = epoch_checkpoints(run_dir)
    removed = [p for _, p in ckpts[:-keep_last]] if keep_last > 0 else []
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def load_resume_point(run_dir: Path, log=print) -> dict | None:
    """Newest loadable state: last.pt, else epoch checkpoints newest first (a corrupt file is skipped)."""
    candidates = [Path(run_dir) / "last.pt"] + [p for _, p in reversed(epoch_checkpoints(run_dir))]
    best: dict | None = None
    for p in candidates:
        if not p.exists():
            continue
        try:
            state = load(p)
        except Exception as exc:  # truncated or corrupt: fall back to the previous one
            log(f"checkpoint {p.name} is unreadable ({type(exc).__name__}); trying the previous one")
            continue
        if "optimizer" not in state:
            continue
        if best is None or state["epoch"] > best["epoch"]:
            best = state
        if p.name == "last.pt":
            return best
    return best


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete the half-written temporary files (`.<name>.<pid>.<id>.tmp`, see engine.fileio) that an engine
    killed in the middle of a save left behind. Only the run's own engine writes here, and it is this one."""
    removed = []
    for tmp in Path(run_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
