"""Launching, queueing, stopping and resuming runs. The dashboard's buttons call these; so do tests.

Each run is a detached process (`python -m engine train --run-id N --db URL`) in its own session
and process group, with its output in runs/<id>/run.log, so it outlives the dashboard. There is no
scheduler daemon: runs wait as `queued` and are claimed atomically from the DB by whoever next
calls `start_queued` (a launch, a finishing engine, the dashboard's refresh), up to
LAB_MAX_CONCURRENT running runs (default 1) on this machine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from db import queries, store
from db.models import FAILED, LOST, QUEUED, RUNNING, STOPPED
from db.session import init_db

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_STALE_S = float(os.environ.get("LAB_HEARTBEAT_STALE_S", "60"))


class LaunchRefused(ValueError):
    """A config that failed validation: `.errors` holds (field, message) pairs."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))


def bootstrap(url: str | None = None) -> str:
    """Create/upgrade the DB and register the built-in datasets that exist on this machine."""
    from engine.data import BUILTIN_SPECS, FASHION_MNIST_DIR

    url = init_db(url)
    existing = {d["name"] for d in queries.list_datasets(url)}
    for name, spec in BUILTIN_SPECS.items():
        if name in existing:
            continue
        if name == "fashion_mnist" and not FASHION_MNIST_DIR.is_dir():
            continue
        store.upsert_dataset(url, name, spec.kind, spec.path, spec.options)
    return url


def runs_root(url: str) -> Path:
    if os.environ.get("LAB_RUNS_DIR"):
        return Path(os.environ["LAB_RUNS_DIR"]).resolve()
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///")).resolve().parent / "runs"
    return Path("runs").resolve()


def run_dir_for(url: str, run_id: int) -> Path:
    return runs_root(url) / f"{run_id:05d}"


def max_concurrent() -> int:
    return max(1, int(os.environ.get("LAB_MAX_CONCURRENT", "1")))


# ------------------------------------------------------------------------------- launch
def launch_run(url: str, config: dict, *, name: str = "", tags=None, notes: str = "", parent_run_id=None,
               start: bool = True) -> int:
    """Validate (schema + preflight), record the run as queued, and start it if a slot is free."""
    from engine.preflight import validate_all

    cfg, errors = validate_all(config, url)
    if errors:
        raise LaunchRefused(errors)
    parent = parent_run_id or cfg.train.init_from_run
    run_id = store.create_run(url, cfg.model_dump(mode="json"), name=name or cfg.name, tags=tags, notes=notes,
                              parent_run_id=parent)
    store.update_run(url, run_id, run_dir=str(run_dir_for(url, run_id)))
    if start:
        start_queued(url)
    return run_id


def start_queued(url: str) -> list[int]:
    """Start queued runs, oldest first, while fewer than max_concurrent() are running here."""
    refresh_lost(url)
    started = []
    while True:
        running = queries.count_runs(url, RUNNING)
        if running >= max_concurrent():
            break
        run_id = queries.oldest_queued(url)
        if run_id is None:
            break
        if not store.claim_queued_run(url, run_id, pid=0):
            continue  # someone else took it
        _spawn(url, run_id)
        started.append(run_id)
    return started


def _spawn(url: str, run_id: int) -> int:
    row = queries.get_run(url, run_id)
    run_dir = Path(row["run_dir"] or run_dir_for(url, run_id))
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "run.log"
    cmd = [sys.executable, "-m", "engine", "train", "--run-id", str(run_id), "--db", url]
    if row.get("resume_requested"):
        cmd.append("--resume")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)  # own session: survives the dashboard
    _CHILDREN[proc.pid] = proc
    store.update_run(url, run_id, pid=proc.pid, log_path=str(log_path), run_dir=str(run_dir), backend="local",
                     resume_requested=False)
    return proc.pid


_CHILDREN: dict[int, subprocess.Popen] = {}


def pid_alive(pid: int | None) -> bool:
    """True if the process exists and is not a zombie (reaping our own children on the way)."""
    if not pid:
        return False
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def refresh_lost(url: str, stale_after_s: float | None = None) -> list[int]:
    """Mark runs whose process died without saying so (kill -9, power loss) as lost."""
    return store.mark_lost_runs(url, stale_after_s or HEARTBEAT_STALE_S, pid_alive)


# ------------------------------------------------------------------------------- stop / resume
def stop_run(url: str, run_id: int, timeout_s: float = 30.0) -> str:
    """SIGTERM the run's process group (it finishes the step and keeps finished epochs); SIGKILL after timeout."""
    row = queries.get_run(url, run_id)
    if row is None:
        raise ValueError(f"no run {run_id}")
    if row["status"] == QUEUED:
        store.mark_ended(url, run_id, STOPPED, error="stopped before it started")
        return STOPPED
    if row["status"] != RUNNING:
        return row["status"]
    store.update_run(url, run_id, stop_requested=True)  # remote engines see this at their next heartbeat
    pid = row["pid"]
    if row["backend"] != "local" or not pid or not pid_alive(pid):
        return RUNNING
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        time.sleep(0.2)
        pid_alive(pid)
    status = queries.get_run(url, run_id)["status"]
    if status == RUNNING:  # killed before it could say so itself
        store.mark_ended(url, run_id, STOPPED, error=f"killed after {timeout_s:.0f} s without stopping")
        status = STOPPED
    start_queued(url)
    return status


def _signal_group(pid: int, sig) -> None:
    try:
        os.killpg(os.getpgid(pid), sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def resume_run(url: str, run_id: int) -> None:
    """Queue a stopped, failed or lost run to continue from its last checkpoint (same run id)."""
    row = queries.get_run(url, run_id)
    if row is None:
        raise ValueError(f"no run {run_id}")
    if row["status"] not in (STOPPED, FAILED, LOST):
        raise ValueError(f"run {run_id} is {row['status']}; only stopped, failed or lost runs can be resumed")
    store.update_run(url, run_id, status=QUEUED, resume_requested=True, ended_at=None, error=None, traceback=None,
                     stop_requested=False)
    start_queued(url)
