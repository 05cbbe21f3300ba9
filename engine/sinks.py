"""The engine speaks to the world through an event sink. The DB writer (db.sink.DBSink) is one;
the console printer below is another. The train loop never imports SQLAlchemy."""

from __future__ import annotations

import sys
import time


class EventSink:
    """Base sink: every hook is optional. Metrics keys are (split, name), e.g. ("val", "acc")."""

    def on_status(self, status: str, **info) -> None: ...
    def on_resume(self, from_epoch: int) -> None: ...
    def on_epoch_end(self, epoch: int, metrics: dict[tuple[str, str], float], confusion: dict[str, list]) -> None: ...
    def on_checkpoint(
        self, epoch: int, kind: str, path: str, metric_name: str | None = None, metric_value: float | None = None
    ) -> None: ...
    def on_checkpoint_removed(self, path: str) -> None: ...
    def on_evaluation(self, split: str, epoch: int, checkpoint: str, result: dict) -> None: ...
    def on_tta(self, split: str, checkpoint: str, results: dict[str, dict]) -> None: ...
    def on_log(self, message: str) -> None: ...

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
