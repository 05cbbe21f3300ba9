"""Callbacks the training loop makes at fixed points. The base does nothing; tests inject faults with
FaultInjection (the engine command line builds one from LAB_FAULT), so the loop has no test-only branches."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import torch

from engine.sinks import EventSink


class TrainHooks:
    def on_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss of `step` (0-based, counted over the whole run), before the backward pass."""
        return loss

    def after_step(self, step: int) -> None: ...

    def after_epoch(self, epoch: int) -> None:
        """After the epoch's checkpoint and events, before the stop checks."""


@dataclass
class FaultInjection(TrainHooks):
    """Faults for tests: a NaN loss from a step on, slow steps (time to stop or kill a run), a crash."""

    nan_at_step: int | None = None
    sleep_per_step: float | None = None
    crash_after_epoch: int | None = None
    # [event, epoch]: kill -9 this process right after that event reached the sinks before it, e.g.
    # ["epoch_end", 2] (the epoch's rows are written, its checkpoint not yet) or ["checkpoint:last", 2]
    kill_after: list | None = None

    def sinks(self) -> list[EventSink]:
        """Sinks to put LAST in the run's MultiSink, so every real sink has seen the event first."""
        return [_KillAfter(*self.kill_after)] if self.kill_after else []

    def on_loss(self, step, loss):
        return loss * float("nan") if self.nan_at_step is not None and step >= self.nan_at_step else loss

    def after_step(self, step):
        if self.sleep_per_step:
            time.sleep(self.sleep_per_step)

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
