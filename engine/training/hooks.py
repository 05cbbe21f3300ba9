"""Callbacks the training loop makes at fixed points. The base does nothing; tests inject faults with
FaultInjection (the engine command line builds one from LAB_FAULT), so the loop has no test-only branches."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


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

    def on_loss(self, step, loss):
        return loss * float("nan") if self.nan_at_step is not None and step >= self.nan_at_step else loss

    def after_step(self, step):
        if self.sleep_per_step:
            time.sleep(self.sleep_per_step)

    def after_epoch(self, epoch):
        if self.crash_after_epoch == epoch:
            raise RuntimeError(f"injected crash after epoch {epoch}")
