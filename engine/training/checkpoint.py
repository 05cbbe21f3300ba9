"""Checkpoints: written atomically (temp file, fsync, rename), loaded with weights_only=True.

A run directory holds `last.pt` (every epoch, full state: the resume point), `best.pt` (the evaluated
weights, rewritten when the chosen metric improves) and `epoch_NNNN.pt` (every `checkpoint_every`
epochs, the newest `keep_last` kept; weights only unless `train.epoch_checkpoint` is full, and then a
resume point too).
Only tensors, numbers, strings, lists and dicts go in, so weights_only loading always works.

A resume takes the newest full state it can read. When the folder had one and none is left (unreadable
files, a last.pt that is weights only), it refuses (NoResumePoint) instead of training from epoch 1 over
the finished epochs; only a run that never wrote a last.pt starts from scratch.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch


class NoResumePoint(RuntimeError):
    """The run folder has checkpoints, yet none holds a state to resume from: one line saying which and why."""


def save_atomic(obj: dict, path: Path) -> None:
    """Serialise in memory, then write the bytes atomically: a full disk is then an OSError with its errno
    (engine.fileio.NoSpaceLeft) instead of torch's writer error, and no half file is ever left behind."""
    from engine.fileio import atomic_write

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


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
    """Newest loadable state: last.pt, else epoch checkpoints newest first (a corrupt file is skipped).

    None when there is no resume point yet (no checkpoint, or only weights-only snapshots of a first epoch
    whose last.pt was never written): start from epoch 1. NoResumePoint when there was one and none is
    left (last.pt or a snapshot unreadable, last.pt not a full state): a retrain from epoch 1 would replace
    the finished epochs, so the resume is refused in one line."""
    last = Path(run_dir) / "last.pt"
    candidates = [last] + [p for _, p in reversed(epoch_checkpoints(run_dir))]
    best: dict | None = None
    why: list[str] = []  # per file that exists but is no resume point
    unreadable = False
    for p in candidates:
        if not p.exists():
            continue
        try:
            state = load(p)
        except Exception as exc:  # truncated or corrupt: fall back to the previous one
            log(f"checkpoint {p.name} is unreadable ({type(exc).__name__}); trying the previous one")
            why.append(f"{p.name} unreadable")
            unreadable = True
            continue
        if not isinstance(state, dict) or "optimizer" not in state or "epoch" not in state:
            why.append(f"{p.name} weights only")
            continue
        if best is None or state["epoch"] > best["epoch"]:
            best = state
        if p == last:
            return best
    if best is None and (unreadable or last.exists()):
        shown = ", ".join(why[:4]) + (f" and {len(why) - 4} more" if len(why) > 4 else "")
        raise NoResumePoint(
            f"cannot resume: no checkpoint in {run_dir} holds a state to resume from ({shown}); "
            "the finished epochs are kept, nothing was retrained"
        )
    return best


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete the half-written temporary files (`.<name>.<pid>.<id>.tmp`, see engine.fileio) that an engine
    killed in the middle of a save left behind. Only the run's own engine writes here, and it is this one."""
    removed = []
    for tmp in Path(run_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
