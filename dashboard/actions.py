"""Things the Run detail page does besides reading rows: evaluating a stored checkpoint (in a child
process, exactly as `python -m engine evaluate` does on the command line; in the background, so the page
stays usable) and reading the run's log."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from control import engine_jobs
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


def _key(url: str, run_id: int) -> tuple:
    return ("evaluate", url, int(run_id))  # one at a time per run; outlives the page run that started it


def start_evaluation(
    url: str, run_id: int, checkpoint: str, tta: list[str] | None = None, split: str = "test", log_dir=None
) -> engine_jobs.EngineJob:
    """Start evaluating one checkpoint in its own process and return at once, so the page stays usable;
    the engine writes the evaluation (and TTA) rows as `evaluate_checkpoint` does."""
    log_path = Path(log_dir or tempfile.gettempdir()) / f"evaluate_{run_id}_{checkpoint}.log"
    argv = evaluate_command(run_id, checkpoint, split, tta)[3:]  # after `python -m engine`
    return engine_jobs.start(_key(url, run_id), url, argv, log_path, {"checkpoint": checkpoint, "split": split})


def evaluation_job(url: str, run_id: int) -> engine_jobs.EngineJob | None:
    return engine_jobs.job(_key(url, run_id))


def finish_evaluation(url: str, run_id: int) -> tuple[bool, str] | None:
    """(succeeded, the command's output) once the run's background evaluation has ended, else None."""
    job = engine_jobs.finish(_key(url, run_id))
    return None if job is None else (job.returncode == 0, job.output(50))


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
