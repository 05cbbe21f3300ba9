"""Short engine jobs in the background: `python -m engine <command> ...` in its own process (own session,
the database URL in its environment, output to a log file), so the page that starts one stays usable.

Jobs are kept per process, keyed by what they are for (e.g. ("export", url, run_id)); a page polls
`job(key)` and collects the outcome once with `finish(key)`. What a job produces lives where the engine
puts it (a database row, a file), so nothing is lost when the dashboard restarts.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from control.command import PROJECT_ROOT, engine_env


@dataclass
class EngineJob:
    argv: list[str]  # the engine's arguments, after `python -m engine`
    proc: subprocess.Popen
    log_path: Path
    what: dict = field(default_factory=dict)  # what the job is about, for the page: {"checkpoint": "best", ...}
    started: float = field(default_factory=time.monotonic)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def output(self, lines: int = 50) -> str:
        return output_tail(self.log_path, lines)

    def progress(self) -> str:
        """Elapsed time and the job's latest line of output."""
        last = self.output(1)
        return f"{self.elapsed():.0f} s" + (f" · {last[:200]}" if last else "")


def output_tail(path: str | Path | None, lines: int = 50) -> str:
    """The last lines of a job's log (a progress bar's \\r-rewritten line: its last state); "" if none."""
    try:
        text = Path(path).read_bytes()[-256_000:].decode("utf-8", errors="replace") if path else ""
    except OSError:
        return ""
    return "\n".join(ln.rsplit("\r", 1)[-1] for ln in text.splitlines()[-lines:]).strip()


_JOBS: dict[tuple, EngineJob] = {}
_LOCK = threading.Lock()


def spawn(url: str, argv: list[str], log_path: str | Path) -> subprocess.Popen:
    """Start `python -m engine *argv` detached from this process (its own session), reaped by a thread."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", *argv],
            cwd=PROJECT_ROOT,
            env=engine_env(url),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    threading.Thread(target=proc.wait, name=f"reap-engine-{proc.pid}", daemon=True).start()  # no zombie
    return proc


def start(key: tuple, url: str, argv: list[str], log_path: str | Path, what: dict | None = None) -> EngineJob:
    """Start the job for `key` unless one is already running for it (then that one is returned)."""
    with _LOCK:
        if (job := _JOBS.get(key)) is not None and job.running:
            return job
        job = _JOBS[key] = EngineJob(list(argv), spawn(url, argv, log_path), Path(log_path), dict(what or {}))
        return job


def job(key: tuple) -> EngineJob | None:
    return _JOBS.get(key)


def finish(key: tuple) -> EngineJob | None:
    """The job for `key` once it has ended (and forget it), else None."""
    with _LOCK:
        j = _JOBS.get(key)
        if j is None or j.running:
            return None
        return _JOBS.pop(key)
