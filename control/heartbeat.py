"""The engine's heartbeat: a background thread that refreshes `runs.heartbeat_at` while the process lives.

`heartbeat_at` then means "this engine process is alive and reaches the DB" from its first second
(torch imports and data loading take a while) through long validations and the final evaluation.
A frozen (SIGSTOP), hung-in-C or disconnected process stops beating; `launcher.refresh_lost` marks
its run lost once the heartbeat is older than heartbeat_stale_s(), unless its process is seen alive
on this host (a database locked for a minute stops every heartbeat, not the engines). Kept free of heavy imports so
the first beat goes out before torch is even loaded.
"""

from __future__ import annotations

import os
import threading


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
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}", daemon=True)

    def _beat(self) -> None:
        from db import store

        while True:
            try:
                store.heartbeat(self.url, self.run_id)
            except Exception:  # a DB busy past its timeout: the next beat tries again
                pass
            if self._stop.wait(self.every_s):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        return False
