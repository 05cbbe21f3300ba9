"""The engine's heartbeat: a background thread that refreshes `runs.heartbeat_at` while the process lives.

`heartbeat_at` then means "this engine process is alive and reaches the DB" from its first second
(torch imports and data loading take a while) through long validations and the final evaluation.
A frozen (SIGSTOP), hung-in-C or disconnected process stops beating; `launcher.refresh_lost` marks
its run lost once the heartbeat is older than heartbeat_stale_s(), unless its process is seen alive
on this host (a database locked for a minute stops every heartbeat, not the engines). Kept free of heavy imports so
the first beat goes out before torch is even loaded.

It beats only while the run is not another engine's (db.store.engine_heartbeat): a frozen engine that
continues after its run was taken over, stopped or ended stops beating for good, instead of keeping
alive a run it no longer owns.

It also carries the run's live progress (phase, step of steps, images/s, ETA: engine.training.live):
the engine offers its newest state (`offer`, no I/O), and the thread writes it with a beat, at most once
per PROGRESS_EVERY_S, in the heartbeat's own UPDATE; the first beat sets the phase "starting", so a
resumed run never shows the previous engine's progress. No state offered: a plain beat every every_s.
"""

from __future__ import annotations

import os
import threading
import time

PROGRESS_EVERY_S = 1.0


def heartbeat_stale_s() -> float:
    """A running run whose heartbeat is older than this is lost (LAB_HEARTBEAT_STALE_S, default 60 s)."""
    return float(os.environ.get("LAB_HEARTBEAT_STALE_S", "60"))


def heartbeat_every_s() -> float:
    """Four beats per stale period, at most every 5 s: one slow write never makes a run look lost."""
    return max(0.25, min(5.0, heartbeat_stale_s() / 4))


class Heartbeat:
    def __init__(self, url: str, run_id: int, every_s: float | None = None):
        self.url, self.run_id = url, run_id
        self.every_s = every_s or heartbeat_every_s()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict | None = {"phase": "starting", "at": time.time()}  # newest progress not yet written
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}", daemon=True)

    def offer(self, progress: dict) -> None:
        """The engine's newest live progress; written with the next beat (an older unwritten one is dropped)."""
        with self._lock:
            self._pending = progress

    def _take(self) -> dict | None:
        with self._lock:
            progress, self._pending = self._pending, None
            return progress

    def _beat(self) -> None:
        from db import store

        mine = (os.getpid(), os.getppid())  # the engine, or the torchrun the launcher recorded for it
        tick = min(self.every_s, PROGRESS_EVERY_S)
        last = -float("inf")
        while True:
            progress = self._take()
            if progress is not None or time.monotonic() - last >= self.every_s:
                try:
                    if not store.engine_heartbeat(self.url, self.run_id, mine, progress=progress):
                        return
                except Exception:  # a DB busy past its timeout: the next beat tries again
                    if progress is not None:
                        with self._lock:
                            self._pending = self._pending or progress
                last = time.monotonic()
            if self._stop.wait(tick):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        return False
