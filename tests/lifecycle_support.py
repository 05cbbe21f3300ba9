"""Helpers for the lifecycle and fault-injection tests: waiting for states of real runs in a real
SQLite file, and making sure no engine a test started outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from db import queries
from db.models import FINAL

ROOT = Path(__file__).resolve().parent.parent
# Metrics that measure the machine, not the model: they differ between two identical runs.
TIMING_METRICS = {"epoch_seconds", "images_per_sec", "data_wait"}


def fast_digits(url: str) -> str:
    """Register the sklearn digits, the very same images and labels, as an .npz dataset in this DB and
    return its name: engines then load them with numpy alone instead of importing scikit-learn,
    which saves seconds of start-up per engine (and these tests start about twenty)."""
    import numpy as np

    from db import store
    from engine.data import BUILTIN_SPECS, load_arrays

    path = Path(url.removeprefix("sqlite:///")).parent / "digits.npz"
    if not path.exists():
        d = load_arrays(BUILTIN_SPECS["digits"])
        np.savez(path, images=d.train_x, labels=d.train_y)
    store.upsert_dataset(url, "digits_npz", "npz", str(path))
    return "digits_npz"


def quick_config(url: str, **overrides) -> dict:
    """tiny_config on the fast-loading digits."""
    from tests.conftest import tiny_config

    return tiny_config(**{"data.dataset": fast_digits(url), **overrides})


def wait_for(predicate, timeout: float = 180.0, what: str = "condition", every: float = 0.2):
    """Poll until predicate() is truthy (generous deadline; the deadline is a hang guard, not an assertion on speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run(url: str, run_id: int) -> dict:
    return queries.get_run(url, run_id)


def wait_status(url: str, run_id: int, statuses, timeout: float = 180.0) -> dict:
    statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    row = wait_for(
        lambda: (r := run(url, run_id))["status"] in statuses and r,
        timeout,
        f"run {run_id} to become {'/'.join(statuses)} (is {run(url, run_id)['status']})",
    )
    return row


def wait_final(url: str, run_id: int, timeout: float = 240.0) -> dict:
    return wait_status(url, run_id, FINAL, timeout)


def metric_rows(url: str, run_id: int, with_timing: bool = False) -> dict[tuple[int, str, str], float]:
    """{(epoch, split, name): value} of one run; timing metrics left out unless asked for."""
    df = queries.metric_history(url, [run_id])
    return {
        (int(r.epoch), r.split, r.name): float(r.value)
        for r in df.itertuples()
        if with_timing or r.name not in TIMING_METRICS
    }


def log_text(url: str, run_id: int) -> str:
    path = run(url, run_id)["log_path"]
    return Path(path).read_text(errors="replace") if path and Path(path).exists() else ""


def python_proc(code: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """A real Python process running `code` from the project root (a stand-in dashboard, a racing launcher)."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT) + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def kill_engines(url: str) -> None:
    """Teardown: empty the queue, then SIGKILL every engine of this test's DB that still runs (and only those)."""
    from control.launcher import is_engine_process
    from db import store

    try:
        runs = queries.list_runs(url)
    except Exception:
        return
    if runs.empty:
        return
    for run_id in runs["id"].tolist():
        store.stop_if_queued(url, run_id)  # a finishing engine must not start anything now
    for run_id in runs["id"].tolist():
        pid = queries.get_run(url, run_id)["pid"]
        if pid and is_engine_process(pid, run_id):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
