"""The last faults, with real engine processes, real files and a real SQLite file: a disk that fills up
while checkpoints are written, a resume that finds every checkpoint unreadable, and a frozen engine that
continues after its run went on without it (taken over by a new engine, or stopped)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from control.launcher import launch_run, pid_alive, refresh_lost, resume_run, start_queued, stop_run
from db import queries, store
from db.models import RunStatus
from engine.training import checkpoint as ckpt
from tests.lifecycle_support import (
    ROOT,
    kill_engines,
    log_text,
    metric_rows,
    quick_config,
    run,
    wait_final,
    wait_for,
)

EXACT = {  # deterministic and short: an interrupted + resumed run must equal an uninterrupted one
    "train.epochs": 3,
    "train.max_steps_per_epoch": 4,
    "train.deterministic": True,
    "train.keep_last": 5,
    "eval.tta": ["none"],
}


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


def _straight(db_url) -> dict:
    straight = launch_run(db_url, quick_config(db_url, **EXACT), name="uninterrupted")
    row = wait_final(db_url, straight)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
    return metric_rows(db_url, straight)


def _files(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir()) if p.suffix == ".pt"}


# ------------------------------------------------------------------------------------------- full disk
@pytest.mark.parametrize("full", ["last.pt", "epoch_*.pt"])
@pytest.mark.attack("full disk")
def test_a_full_disk_fails_in_one_line_keeps_finished_epochs_and_resumes_after_space_is_freed(
    db_url, monkeypatch, full
):
    expected = _straight(db_url)
    monkeypatch.setenv("LAB_FAULT", json.dumps({"disk_full_at": [2, full]}))  # the write itself gets ENOSPC
    run_id = launch_run(db_url, quick_config(db_url, **EXACT), name=f"disk full at {full}")
    row = wait_final(db_url, run_id)
    run_dir = Path(row["run_dir"])
    assert row["status"] == RunStatus.FAILED
    assert row["error"] == f"no space left on device in {run_dir}"  # not torch's inline_container.cc words
    assert "inline_container" not in row["traceback"] and "No space left on device" in row["traceback"]
    assert row["epochs_done"] == 2  # the epoch's rows come before its checkpoints
    assert metric_rows(db_url, run_id) == {k: v for k, v in expected.items() if k[0] <= 2}
    assert ckpt.load(run_dir / "last.pt")["epoch"] == 1  # the resume point before the failed save, intact
    assert not list(run_dir.glob(".*.tmp"))  # no half-written file left behind

    monkeypatch.delenv("LAB_FAULT")  # space freed
    resume_run(db_url, run_id)
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
    assert "resuming after epoch 1" in log_text(db_url, run_id)
    assert metric_rows(db_url, run_id) == expected  # every epoch, once, with the uninterrupted run's numbers
    assert ckpt.load(run_dir / "last.pt")["epoch"] == 3


def _tmpfs_available() -> str | None:
    if not shutil.which("unshare"):
        return "no unshare(1)"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"cannot mount a private tmpfs here: {probe.stderr.strip()[:200]}"


@pytest.mark.attack("full disk")
def test_a_real_full_filesystem_fails_the_run_in_one_line_and_resumes_once_space_is_freed(db_url, tmp_path):
    """A real tmpfs, too small for the run's checkpoints, mounted over the run's folder in a private mount
    namespace: the kernel itself answers ENOSPC. Then the filler file goes and the same run resumes."""
    if reason := _tmpfs_available():
        pytest.skip(reason)
    run_id = launch_run(db_url, quick_config(db_url, **{**EXACT, "train.epochs": 4}), start=False)
    run_dir = Path(run(db_url, run_id)["run_dir"])
    run_dir.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("LAB_FAULT", None)
    engine = f"{sys.executable} -m engine train --run-id {run_id}"
    # 3 MiB free: epoch 1's files fit (a full state is ~1.3 MB here, weights ~0.4 MB), epoch 2's last.pt,
    # written beside the previous one, does not. Then the filler goes and the same run resumes by hand in
    # the same namespace, the tmpfs still mounted.
    script = (
        f"set -u; mount -t tmpfs -o size=8m tmpfs {run_dir} && "
        f"head -c 5m /dev/zero > {run_dir}/filler; "
        f"{engine}; echo first=$?; rm {run_dir}/filler; "
        f"{engine} --resume; echo second=$?; ls -la {run_dir}"
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert "first=1" in out and "second=0" in out, out[-3000:]
    row = run(db_url, run_id)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], out[-3000:])
    assert f"no space left on device in {run_dir}" in out  # the failure, in one line, in the engine's output
    assert "inline_container" not in out
    assert "resuming after epoch" in out  # from the last checkpoint that fitted, not from scratch
    assert {k[0] for k in metric_rows(db_url, run_id)} == {1, 2, 3, 4} and row["epochs_done"] == 4


# ------------------------------------------------------------------------------- unreadable checkpoints
@pytest.mark.attack("crash and bad checkpoints")
def test_a_resume_that_finds_every_checkpoint_unreadable_says_so_and_keeps_the_finished_epochs(db_url, monkeypatch):
    monkeypatch.setenv("LAB_FAULT", json.dumps({"crash_after_epoch": 2}))
    run_id = launch_run(db_url, quick_config(db_url, **EXACT))
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.FAILED and row["epochs_done"] == 2
    monkeypatch.delenv("LAB_FAULT")
    before = metric_rows(db_url, run_id, with_timing=True)
    checkpoints_before = queries.checkpoints(db_url, run_id)
    run_dir = Path(row["run_dir"])
    assert {"last.pt", "best.pt", "epoch_0001.pt", "epoch_0002.pt"} <= set(_files(run_dir))
    (run_dir / "last.pt").write_bytes(b"garbage, not a zip file")
    data = (run_dir / "epoch_0002.pt").read_bytes()
    (run_dir / "epoch_0002.pt").write_bytes(data[: len(data) // 2])  # truncated
    # epoch_0001.pt stays readable, but per-epoch snapshots hold weights only: no resume point either
    files = _files(run_dir)

    resume_run(db_url, run_id)
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.FAILED
    assert row["error"].startswith(f"cannot resume: no checkpoint in {run_dir} holds a state to resume from (")
    assert "last.pt unreadable" in row["error"] and "epoch_0002.pt unreadable" in row["error"]
    assert "epoch_0001.pt weights only" in row["error"] and "\n" not in row["error"]
    assert row["epochs_done"] == 2
    assert metric_rows(db_url, run_id, with_timing=True) == before  # not retrained from epoch 1, not a row lost
    assert queries.checkpoints(db_url, run_id) == checkpoints_before and _files(run_dir) == files


@pytest.mark.attack("crash and bad checkpoints")
def test_what_counts_as_no_resume_point_yet_and_what_refuses(tmp_path):
    """A first epoch killed (or out of disk) after its weights-only snapshot, before its last.pt: nothing
    to resume yet, start over. A last.pt that is unreadable or holds weights only: there was a resume
    point and it is gone, refuse."""
    import torch

    weights = {"epoch": 1, "model": {"w": torch.ones(2)}, "config": "{}"}
    ckpt.save_atomic(weights, ckpt.epoch_path(tmp_path, 1))
    assert ckpt.load_resume_point(tmp_path, log=lambda m: None) is None
    ckpt.save_atomic(weights, tmp_path / "last.pt")
    with pytest.raises(ckpt.NoResumePoint, match=r"\(last\.pt weights only, epoch_0001\.pt weights only\)"):
        ckpt.load_resume_point(tmp_path, log=lambda m: None)


# ----------------------------------------------------------------------------------- frozen engine
def _frozen_and_lost(db_url, monkeypatch) -> tuple[int, int]:
    """A run whose engine is frozen (SIGSTOP) after its first epoch and marked lost for it."""
    monkeypatch.setenv("LAB_HEARTBEAT_STALE_S", "2")
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")  # the frozen engine keeps its slot
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.3}))
    run_id = launch_run(db_url, quick_config(db_url, **EXACT))
    wait_for(
        lambda: any(c["kind"] == "last" for c in queries.checkpoints(db_url, run_id)), what="the first resume point"
    )
    pid = run(db_url, run_id)["pid"]
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: run_id in refresh_lost(db_url), timeout=60, what="the frozen run to become lost", every=0.5)
    return run_id, pid


def _everything(db_url, run_id) -> dict:
    """Every trace an engine leaves of a run: its row, rows (with timings), checkpoints and files."""
    row = dict(run(db_url, run_id))
    return {
        "row": row,
        "metrics": metric_rows(db_url, run_id, with_timing=True),
        "checkpoints": queries.checkpoints(db_url, run_id),
        "evaluations": queries.evaluations(db_url, run_id),
        "files": _files(Path(row["run_dir"])),
    }


def _continue_and_wait_for_exit(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not pid_alive(pid), timeout=120, what="the continued engine to notice and exit")


@pytest.mark.attack("frozen engine")
def test_a_frozen_engine_that_continues_after_a_new_engine_took_its_run_writes_nothing_and_exits(db_url, monkeypatch):
    """Resume kills a frozen engine it can reach; one it cannot (another host, a Slurm node) is left
    running. Here the run is requeued the way resume does after that kill, without it, and a new engine
    takes it over and finishes. Then the old engine continues: not a row, checkpoint, heartbeat or status."""
    run_id, old = _frozen_and_lost(db_url, monkeypatch)
    try:
        assert store.requeue_for_resume(db_url, run_id)
        assert start_queued(db_url) == [run_id]
        row = wait_final(db_url, run_id)
        assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
        assert row["pid"] != old and pid_alive(old)
        after_new = _everything(db_url, run_id)
        _continue_and_wait_for_exit(old)
    finally:
        if pid_alive(old):
            os.kill(old, signal.SIGCONT)
            os.killpg(old, signal.SIGKILL)
    assert _everything(db_url, run_id) == after_new  # the old engine changed nothing at all
    assert f"this engine (pid {old} on" in log_text(db_url, run_id)  # and said why it left
    assert {k[0] for k in after_new["metrics"]} == {1, 2, 3}


@pytest.mark.attack("frozen engine")
def test_a_frozen_engine_that_continues_after_its_run_was_stopped_writes_nothing_and_exits(db_url, monkeypatch):
    run_id, old = _frozen_and_lost(db_url, monkeypatch)
    try:
        assert store.requeue_for_resume(db_url, run_id)  # queued again (as resume does after its kill) ...
        assert stop_run(db_url, run_id) == RunStatus.STOPPED  # ... and stopped before it started
        stopped = _everything(db_url, run_id)
        _continue_and_wait_for_exit(old)
    finally:
        if pid_alive(old):
            os.kill(old, signal.SIGCONT)
            os.killpg(old, signal.SIGKILL)
    assert _everything(db_url, run_id) == stopped
    assert stopped["row"]["status"] == RunStatus.STOPPED and stopped["row"]["epochs_done"] < 3
