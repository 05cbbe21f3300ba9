"""Things the Run detail page does besides reading rows: evaluating a stored checkpoint (in a child
process, exactly as `python -m engine evaluate` does on the command line; in the background, so the page
stays usable) and reading the run's log."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from control.command import PROJECT_ROOT, engine_env, evaluate_command


def evaluate_checkpoint(
    url: str, run_id: int, checkpoint: str, tta: list[str] | None = None, split: str = "test", timeout_s: float = 1800
) -> tuple[bool, str]:
    """Run `python -m engine evaluate` for one checkpoint; the engine writes the evaluation (and TTA)
    rows. Returns (succeeded, the command's output). A separate process keeps torch and a possible
    crash out of the dashboard."""
    cmd = evaluate_command(run_id, checkpoint, split, tta)
    try:
        proc = subprocess.run(
            cmd,
            cwd=PROJECT_ROOT,
            env=engine_env(url),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False, f"the evaluation did not finish within {timeout_s:.0f} s"
    output = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0, output


@dataclass
class EvaluationJob:
    """`python -m engine evaluate` running in the background for one run (one at a time per run)."""

    checkpoint: str
    split: str
    proc: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def progress(self) -> str:
        """Elapsed time and the evaluation's latest line of output."""
        last = (log_tail(str(self.log_path), 1) or "").strip()
        return f"{time.monotonic() - self.started:.0f} s" + (f" · {last[:200]}" if last else "")


# Jobs outlive the page run (and the browser tab) that started them; keyed by (database URL, run id).
_JOBS: dict[tuple[str, int], EvaluationJob] = {}


def start_evaluation(
    url: str, run_id: int, checkpoint: str, tta: list[str] | None = None, split: str = "test", log_dir=None
) -> EvaluationJob:
    """Start evaluating one checkpoint in its own process and return at once, so the page stays usable;
    the engine writes the evaluation (and TTA) rows as `evaluate_checkpoint` does."""
    if (job := _JOBS.get((url, run_id))) is not None and job.running:
        return job
    log_dir = Path(log_dir or tempfile.gettempdir())
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"evaluate_{run_id}_{checkpoint}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            evaluate_command(run_id, checkpoint, split, tta),
            cwd=PROJECT_ROOT,
            env=engine_env(url),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    threading.Thread(target=proc.wait, name=f"reap-evaluate-{proc.pid}", daemon=True).start()  # no zombie
    job = _JOBS[(url, run_id)] = EvaluationJob(checkpoint, split, proc, log_path)
    return job


def evaluation_job(url: str, run_id: int) -> EvaluationJob | None:
    return _JOBS.get((url, run_id))


def finish_evaluation(url: str, run_id: int) -> tuple[bool, str] | None:
    """(succeeded, the command's output) once the run's background evaluation has ended, else None."""
    job = _JOBS.get((url, run_id))
    if job is None or job.running:
        return None
    del _JOBS[(url, run_id)]
    output = log_tail(str(job.log_path), 50) or ""
    return job.proc.returncode == 0, output.strip()


def log_tail(path: str | None, lines: int = 200, max_bytes: int = 256_000) -> str | None:
    """The last `lines` lines of a log file (reading at most `max_bytes` from its end); None if missing."""
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    # A progress bar rewrites its line with \r; show the last state of each line.
    out = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
    return "\n".join(out[-lines:])


def file_reader(path: str):
    """A callable for st.download_button: the file is read only when the user downloads it."""
    return lambda: Path(path).read_bytes()
