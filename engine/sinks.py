"""The engine speaks to the world through an event sink. The DB writer (db.sink.DBSink) is one;
the console printer below is another. The train loop never imports SQLAlchemy."""

from __future__ import annotations

import sys
import time


class RunTakenOver(RuntimeError):
    """Raised by a sink when the run is no longer this engine's (it was frozen, marked lost, and the run has
    been resumed by another engine, stopped or requeued since): the engine must write nothing more and exit."""


class EventSink:
    """Base sink: every hook is optional. Metrics keys are (split, name), e.g. ("val", "acc")."""

    def on_status(self, status: str, **info) -> None: ...
    def on_resume(self, from_epoch: int) -> None: ...
    def on_epoch_end(self, epoch: int, metrics: dict[tuple[str, str], float], confusion: dict[str, list]) -> None: ...
    def on_predictions(self, epoch: int, split: str, pred, confidence) -> None:
        """Every image's predicted class and its probability (arrays in the split's fixed order), sent just
        before on_epoch_end of the same epoch: a sink may keep them and write them with the epoch's rows."""

    def on_checkpoint(
        self, epoch: int, kind: str, path: str, metric_name: str | None = None, metric_value: float | None = None
    ) -> None: ...
    def on_checkpoint_removed(self, path: str) -> None: ...
    def on_checkpoints_due(self, epoch: int) -> None:
        """Just before the epoch's checkpoints go into the run's folder; a sink raises RunTakenOver to keep
        an engine that no longer owns the run from writing them."""

    def on_evaluation(self, split: str, epoch: int, checkpoint: str, result: dict) -> None: ...
    def on_tta(self, split: str, checkpoint: str, results: dict[str, dict]) -> None: ...
    def on_log(self, message: str) -> None: ...
    def on_facts(self, facts: dict) -> None:
        """Facts the engine established about the run (top-level keys of runs.facts), e.g. {"ema": {...}}."""

    def on_progress(self, progress: dict) -> None:
        """Where the run is inside a phase (engine.training.live): {"phase", "step", "steps", "epoch",
        "images_per_sec", "eta_s", "at"}; phase is train, val, test, tta:<variant> or saving. At most about
        once a second: a sink may keep only the newest."""

    def heartbeat(self) -> bool:
        """Called every few seconds while training; return True to ask the run to stop."""
        return False


class ConsoleSink(EventSink):
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def _print(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.stream, flush=True)

    def on_status(self, status, **info):
        extra = " ".join(f"{k}={v}" for k, v in info.items() if k != "traceback" and v is not None)
        self._print(f"status {status} {extra}".rstrip())

    def on_epoch_end(self, epoch, metrics, confusion):
        keys = [
            ("train", "loss"),
            ("train", "acc"),
            ("val", "loss"),
            ("val", "acc"),
            ("train", "lr"),
            ("train", "images_per_sec"),
        ]
        parts = [f"{s}_{n}={metrics[(s, n)]:.4g}" for s, n in keys if (s, n) in metrics]
        self._print(f"epoch {epoch} " + " ".join(parts))

    def on_evaluation(self, split, epoch, checkpoint, result):
        self._print(f"{split} ({checkpoint}, epoch {epoch}) acc={result['accuracy']:.4f}")

    def on_tta(self, split, checkpoint, results):
        self._print("tta " + " ".join(f"{v}={r['accuracy']:.4f}" for v, r in results.items()))

    def on_log(self, message):
        self._print(message)


class MultiSink(EventSink):
    def __init__(self, *sinks: EventSink):
        self.sinks = sinks

    def __getattribute__(self, name):
        if name.startswith("on_"):

            def fan_out(*args, **kwargs):
                for s in object.__getattribute__(self, "sinks"):
                    getattr(s, name)(*args, **kwargs)

            return fan_out
        return object.__getattribute__(self, name)

    def heartbeat(self) -> bool:
        return any([s.heartbeat() for s in self.sinks])
