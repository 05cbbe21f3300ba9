"""Run lifecycle with real engine processes and a real SQLite file: the queue (in order, limit held
under racing launchers, drained without a dashboard), stop -> resume reproducing the uninterrupted
run, heartbeats (a frozen engine becomes lost, a starting one never does)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from control.launcher import launch_run, pid_alive, refresh_lost, resume_run, stop_run
from db import queries, store
from db.models import RunStatus
from tests.lifecycle_support import (
    kill_engines,
    log_text,
    metric_rows,
    python_proc,
    quick_config,
    run,
    wait_final,
    wait_for,
)

# Small and quick: a few steps per epoch, final evaluation without TTA passes.
QUICK = {"train.epochs": 1, "train.max_steps_per_epoch": 2, "eval.tta": ["none"]}


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


class RunningSampler:
    """Samples how many runs are running, from another thread, while a test waits (the dashboard's view)."""

    def __init__(self, url):
        self.url, self.max_running, self._stop = url, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.max_running = max(self.max_running, queries.count_runs(self.url, RunStatus.RUNNING))
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.attack("kill -9")
def test_queue_starts_in_order_within_the_limit_and_drains_after_the_dashboard_is_killed(db_url, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "1")
    # A stand-in dashboard: a separate process that launches three runs, reports their ids, then hangs around.
    code = f"""
import json, time
from control.launcher import launch_run
ids = [launch_run({db_url!r}, {{**{quick_config(db_url, **QUICK)!r}, "name": f"q{{i}}"}}) for i in range(3)]
print(json.dumps(ids), flush=True)
time.sleep(600)
"""
    dashboard = python_proc(code)
    try:
        ids = json.loads(dashboard.stdout.readline())
        assert len(ids) == 3, dashboard.stderr.read()
        statuses = [run(db_url, i)["status"] for i in ids]
        assert statuses.count(RunStatus.QUEUED) >= 1  # with one slot, at least the last launch had to wait
        dashboard.kill()  # kill -9 the dashboard: the runs must not depend on it
        dashboard.wait()
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
    with RunningSampler(db_url) as sampler:
        rows = [wait_final(db_url, i) for i in ids]
    assert [r["status"] for r in rows] == [RunStatus.COMPLETED] * 3, [(r["status"], r["error"]) for r in rows]
    assert sampler.max_running <= 1
    # in order, one at a time: each run started after the previous one had ended
    for before, after in zip(rows, rows[1:]):
        assert before["started_at"] <= before["ended_at"] <= after["started_at"]
    for i in ids:
        assert len(metric_rows(db_url, i, with_timing=True)) == 8  # one epoch: 6 train + 2 val metrics
    # a dashboard started again sees them all, finished, and nothing lost
    code = f"""
from control.launcher import start_queued
from db import queries
start_queued({db_url!r})
print(",".join(queries.list_runs({db_url!r}).sort_values("id")["status"]))
"""
    again = python_proc(code)
    out, err = again.communicate(timeout=120)
    assert out.strip() == "completed,completed,completed", err


@pytest.mark.attack("concurrent runs")
def test_racing_launchers_never_exceed_the_limit(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")
    ids = [launch_run(db_url, quick_config(db_url, **QUICK, name=f"r{i}"), start=False) for i in range(3)]
    assert [run(db_url, i)["status"] for i in ids] == [RunStatus.QUEUED] * 3
    # Four launchers (dashboards, CLIs, finishing engines) call start_queued at the same instant:
    # each imports everything, says it is ready, then spins until the go file appears.
    go = tmp_path / "go"
    code = f"""
import json, os, time
from control.launcher import start_queued
print("ready", flush=True)
while not os.path.exists({str(go)!r}):
    time.sleep(0.0005)
print(json.dumps(start_queued({db_url!r})), flush=True)
time.sleep(600)  # stay alive: only the engines should matter from here on
"""
    racers = [python_proc(code) for _ in range(4)]
    try:
        assert [p.stdout.readline().strip() for p in racers] == ["ready"] * 4, [p.stderr.read() for p in racers]
        go.touch()
        started = [json.loads(p.stdout.readline() or "null") for p in racers]
    finally:
        for p in racers:
            p.kill()
            p.wait()
    assert None not in started, [p.stderr.read() for p in racers]
    claimed = sorted(i for s in started for i in s)
    assert claimed == ids[:2]  # exactly the two free slots, the two oldest runs, each claimed once
    assert [run(db_url, i)["status"] for i in ids] == [RunStatus.RUNNING, RunStatus.RUNNING, RunStatus.QUEUED]
    # (the queue test above shows finishing engines draining the rest; here, stop: queued first)
    assert [stop_run(db_url, i, timeout_s=60) for i in reversed(ids)] == [RunStatus.STOPPED] * 3


def repro_config(url):
    """Every piece of state a resume must restore: AdamW moments, cosine schedule, EMA, dropout,
    random augmentation and label smoothing."""
    return quick_config(
        url,
        **{
            "train.epochs": 4,
            "train.max_steps_per_epoch": 6,
            "train.deterministic": True,
            "model.dropout": 0.2,
            "regularize.ema.enabled": True,
            "regularize.ema.decay": 0.5,
            "loss.label_smoothing": 0.1,
            "eval.tta": ["none"],
            "augment.train": [{"name": "PadRandomCrop", "p": 0.5, "params": {"padding": 1}}],
        },
    )


def test_stop_keeps_finished_epochs_and_resume_reproduces_the_uninterrupted_run(db_url, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")  # both side by side: the same numbers, whatever runs next to it
    straight = launch_run(db_url, repro_config(db_url), name="uninterrupted")
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.3}))  # slow enough to stop mid-run
    stopped = launch_run(db_url, repro_config(db_url), name="stopped and resumed")
    assert wait_final(db_url, straight)["status"] == RunStatus.COMPLETED
    expected = metric_rows(db_url, straight)
    wait_for(lambda: run(db_url, stopped)["epochs_done"] >= 2, what="two finished epochs")
    pid = run(db_url, stopped)["pid"]
    assert stop_run(db_url, stopped, timeout_s=120) == RunStatus.STOPPED
    row = run(db_url, stopped)
    assert row["error"] is None  # the engine stopped itself after its current step: no SIGKILL needed
    assert not pid_alive(pid)
    done = row["epochs_done"]
    assert 2 <= done < 4, "the stop must land before the run finished"
    kept = metric_rows(db_url, stopped)
    assert {k[0] for k in kept} == set(range(1, done + 1))  # every finished epoch kept, no partial one
    assert kept == {k: v for k, v in expected.items() if k[0] <= done}

    monkeypatch.delenv("LAB_FAULT")
    resume_run(db_url, stopped)
    row = wait_final(db_url, stopped)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
    assert row["epochs_done"] == 4
    assert f"resuming after epoch {done}" in log_text(db_url, stopped)
    assert metric_rows(db_url, stopped) == expected  # same run id, same numbers as if never interrupted
    test_acc = {
        r: [e["accuracy"] for e in queries.evaluations(db_url, r) if e["split"] == "test"] for r in (straight, stopped)
    }
    assert test_acc[stopped] == test_acc[straight] and test_acc[straight]


@pytest.mark.attack("frozen engine")
def test_a_frozen_engine_becomes_lost_and_resume_replaces_it(db_url, monkeypatch):
    monkeypatch.setenv("LAB_HEARTBEAT_STALE_S", "6")  # engines inherit it: they beat every 1.5 s
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.2}))
    run_id = launch_run(
        db_url, quick_config(db_url, **{"train.epochs": 3, "train.max_steps_per_epoch": 5, "eval.tta": ["none"]})
    )

    # Starting up (torch imports, data loading) can take longer than 6 s: it must never look lost meanwhile.
    def first_epoch_while_looking():
        assert run_id not in refresh_lost(db_url), run(db_url, run_id)["error"]
        return run(db_url, run_id)["epochs_done"] >= 1

    wait_for(first_epoch_while_looking, what="the first epoch", every=0.5)
    pid = run(db_url, run_id)["pid"]
    os.kill(pid, signal.SIGSTOP)  # frozen: the process exists, but no heartbeat comes any more
    try:
        wait_for(lambda: run_id in refresh_lost(db_url), timeout=60, what="the frozen run to become lost", every=0.5)
        row = run(db_url, run_id)
        assert row["status"] == RunStatus.LOST and "no heartbeat" in row["error"]
        assert pid_alive(pid)
        done = row["epochs_done"]
        monkeypatch.delenv("LAB_FAULT")
        resume_run(db_url, run_id)  # kills the frozen process first: one run, one engine
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
    assert row["epochs_done"] == 3 and row["pid"] != pid
    assert {k[0] for k in metric_rows(db_url, run_id)} == {1, 2, 3}
    assert f"resuming after epoch {done}" in log_text(db_url, run_id)


def test_stop_while_queued_or_starting_and_what_can_be_resumed(db_url):
    run_id = launch_run(db_url, quick_config(db_url, **QUICK), start=False)
    assert stop_run(db_url, run_id) == RunStatus.STOPPED
    row = run(db_url, run_id)
    assert row["status"] == RunStatus.STOPPED and row["error"] == "stopped before it started" and row["pid"] is None
    resume_run(db_url, run_id)  # a stopped run can be resumed (here: from the start, it has no checkpoint)
    row = run(db_url, run_id)
    assert row["status"] == RunStatus.RUNNING and row["error"] is None
    pid = wait_for(lambda: run(db_url, run_id)["pid"], what="the engine's pid")
    assert stop_run(db_url, run_id, timeout_s=60) == RunStatus.STOPPED  # stopped while still importing torch
    assert not pid_alive(pid)
    assert run(db_url, run_id)["epochs_done"] == 0
    with pytest.raises(ValueError, match="no run 999"):
        stop_run(db_url, 999)
    completed = launch_run(db_url, quick_config(db_url, **QUICK), start=False)
    store.update_run(db_url, completed, status=RunStatus.COMPLETED)
    for status in (RunStatus.COMPLETED, RunStatus.QUEUED, RunStatus.RUNNING):
        store.update_run(db_url, completed, status=status)
        with pytest.raises(ValueError, match="only stopped, failed or lost"):
            resume_run(db_url, completed)
