"""Live progress inside a phase: which phase (train, val, test, tta:<variant>, saving), its step out of its
steps, images per second and the time left, handed to the sink's `on_progress`.

Reports are throttled here (at most one per `every_s`, plus one when a phase starts) and cost the loop a
dict: the sink decides how the state travels. The DB sink hands it to the engine's heartbeat thread, which
writes the newest state with its next beat, so a progress report never waits on the database.
"""

from __future__ import annotations

import math
import time

from engine.sinks import EventSink

PROGRESS_EVERY_S = 1.0


def batches(n_images: int, batch_size: int) -> int:
    """Batches of a prediction over n images at batch_size (engine.training.evaluate.eval_batch_size)."""
    return max(1, math.ceil(n_images / max(1, batch_size)))


class LiveProgress:
    """`hooks` (engine.training.hooks.TrainHooks) hears of every evaluation batch (`after_eval_batch`)."""

    def __init__(self, sink: EventSink, every_s: float = PROGRESS_EVERY_S, clock=time.monotonic, hooks=None):
        self.sink, self.every_s, self.clock, self.hooks = sink, every_s, clock, hooks
        self.name, self.steps, self.step, self.images, self.epoch = None, 0, 0, 0, None
        self.started = self.last = -math.inf

    def phase(self, name: str, steps: int, epoch: int | None = None) -> None:
        """A phase begins: reported at once (a phase change is news, and phases are few)."""
        self.name, self.steps, self.step, self.images = name, max(1, int(steps)), 0, 0
        self.epoch = epoch if epoch is not None else self.epoch
        self.started = self.clock()
        self._report(self.started)

    def advance(self, images: int = 0, steps: int = 1) -> None:
        """`steps` steps of the current phase are done, `images` images with them; reported when due."""
        self.step = min(self.steps, self.step + steps)
        self.images += images
        if self.hooks is not None and self.name != "train":  # a training step has its own hook (after_step)
            self.hooks.after_eval_batch(self.name)
        now = self.clock()
        if now - self.last >= self.every_s:
            self._report(now)

    def state(self, now: float | None = None) -> dict:
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 0.0)
        rate = self.images / elapsed if elapsed > 0 and self.images else None
        eta = elapsed / self.step * (self.steps - self.step) if self.step else None
        return {
            "phase": self.name,
            "step": self.step,
            "steps": self.steps,
            "epoch": self.epoch,
            "images_per_sec": round(rate, 1) if rate is not None else None,
            "eta_s": round(eta, 1) if eta is not None else None,
            "at": time.time(),
        }

    def _report(self, now: float) -> None:
        self.last = now
        self.sink.on_progress(self.state(now))
