"""Callbacks the training loop makes at fixed points. The base does nothing; tests inject faults with
FaultInjection (the engine command line builds one from LAB_FAULT), so the loop has no test-only branches."""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.sinks import EventSink


class TrainHooks:
    def on_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss of `step` (0-based, counted over the whole run), before the backward pass."""
        return loss

    def after_step(self, step: int) -> None: ...

    def after_epoch(self, epoch: int) -> None:
        """After the epoch's checkpoint and events, before the stop checks."""

    def after_eval_batch(self, phase: str) -> None:
        """After each prediction batch of a validation, test or TTA phase (engine.training.live)."""


@dataclass
class FaultInjection(TrainHooks):
    """Faults for tests: a NaN loss from a step on, slow steps or evaluation batches (time to stop or kill a
    run, or to watch its progress), a crash, a kill
    at an exact event, a disk that fills up at an exact checkpoint file."""

    nan_at_step: int | None = None
    sleep_per_step: float | None = None
    sleep_per_eval_batch: float | None = None  # slow validation, test and TTA batches (their live progress)
    crash_after_epoch: int | None = None
    # [event, epoch]: kill -9 this process right after that event reached the sinks before it, e.g.
    # ["epoch_end", 2] (the epoch's rows are written, its checkpoint not yet) or ["checkpoint:last", 2]
    kill_after: list | None = None
    # [epoch, file name pattern]: from that epoch's checkpoints on, every atomic write of a matching file
    # (e.g. "last.pt", "epoch_*.pt", "*") fails with ENOSPC, as on a disk that filled up and stays full
    disk_full_at: list | None = None

    def sinks(self) -> list[EventSink]:
        """Sinks to put LAST in the run's MultiSink, so every real sink has seen the event first."""
        out: list[EventSink] = [_KillAfter(*self.kill_after)] if self.kill_after else []
        return out + ([_DiskFullAt(*self.disk_full_at)] if self.disk_full_at else [])

    def on_loss(self, step, loss):
        return loss * float("nan") if self.nan_at_step is not None and step >= self.nan_at_step else loss

    def after_step(self, step):
        if self.sleep_per_step:
            time.sleep(self.sleep_per_step)

    def after_eval_batch(self, phase):
        if self.sleep_per_eval_batch:
            time.sleep(self.sleep_per_eval_batch)

    def after_epoch(self, epoch):
        if self.crash_after_epoch == epoch:
            raise RuntimeError(f"injected crash after epoch {epoch}")


class _KillAfter(EventSink):
    """SIGKILL of the engine at an exact point between two writes: no handler, no clean-up, like the
    OOM killer or a power cut, but at a chosen moment instead of a timed guess."""

    def __init__(self, event: str, epoch: int):
        self.event, self.epoch = event, int(epoch)

    def _maybe_kill(self, event: str, epoch: int) -> None:
        if event == self.event and epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, epoch, metrics, confusion):
        self._maybe_kill("epoch_end", epoch)

    def on_checkpoint(self, epoch, kind, path, metric_name=None, metric_value=None):
        self._maybe_kill(f"checkpoint:{kind}", epoch)


class _DiskFullAt(EventSink):
    """From epoch `epoch`'s rows on, the disk under the run is full for files named like `pattern`: the
    write itself fails with ENOSPC inside engine.fileio.atomic_write, through the real save path."""

    def __init__(self, epoch: int, pattern: str):
        self.epoch, self.pattern = int(epoch), str(pattern)

    def on_epoch_end(self, epoch, metrics, confusion):
        if epoch != self.epoch:
            return
        from engine import fileio

        def full(path: Path) -> None:
            if fnmatch.fnmatch(Path(path).name, self.pattern):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        fileio.WRITE_FAULT = full
