"""More fault injection with real engines and a real SQLite file: a database write-locked for longer
than the heartbeat's stale period, a frozen-then-continued engine, two databases in one folder."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from control.launcher import launch_run, pid_alive, refresh_lost, run_dir_for, start_queued
from db.models import RunStatus, utcnow
from tests.lifecycle_support import kill_engines, metric_rows, quick_config, run, wait_final, wait_for

SLOW = {"train.epochs": 3, "train.max_steps_per_epoch": 4, "eval.tta": ["none"]}


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


def _heartbeat_age_s(url: str, run_id: int) -> float:
    return (utcnow() - run(url, run_id)["heartbeat_at"]).total_seconds()


@pytest.mark.attack("locked database")
def test_a_write_lock_longer_than_the_stale_period_loses_no_live_engine_and_keeps_the_limit(db_url, monkeypatch):
    monkeypatch.setenv("LAB_HEARTBEAT_STALE_S", "2")
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.4}))
    ids = [launch_run(db_url, quick_config(db_url, **{**SLOW, "train.epochs": 6})) for _ in range(3)]
    first = ids[:2]
    wait_for(lambda: all(run(db_url, r)["epochs_done"] >= 1 for r in first), what="both engines past their first epoch")

    lock = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None, timeout=60)
    lock.execute("BEGIN IMMEDIATE")  # every engine's heartbeat and row now waits for us
    try:
        wait_for(lambda: all(_heartbeat_age_s(db_url, r) > 3 for r in first), what="stale heartbeats", every=0.5)
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert refresh_lost(db_url) == []  # before the engines' waiting heartbeats land
    statuses = [run(db_url, r)["status"] for r in ids]
    assert RunStatus.LOST not in statuses and statuses.count(RunStatus.RUNNING) <= 2, statuses
    if RunStatus.COMPLETED not in statuses:  # neither engine finished right after the lock went
        assert start_queued(db_url) == [] and run(db_url, ids[2])["status"] == RunStatus.QUEUED

    for r in ids:
        row = wait_final(db_url, r)
        assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
        assert {k[0] for k in metric_rows(db_url, r)} == set(range(1, 7))


@pytest.mark.attack("frozen engine")
def test_a_frozen_engine_keeps_its_slot_and_its_lost_status_when_it_continues(db_url, monkeypatch):
    monkeypatch.setenv("LAB_HEARTBEAT_STALE_S", "2")
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "1")
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.3}))
    frozen = launch_run(db_url, quick_config(db_url, **SLOW))
    waiting = launch_run(db_url, quick_config(db_url, **SLOW))
    wait_for(lambda: run(db_url, frozen)["epochs_done"] >= 1, what="the first epoch")
    pid = run(db_url, frozen)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: frozen in refresh_lost(db_url), timeout=60, what="the frozen run to become lost", every=0.5)
        assert start_queued(db_url) == []  # its process can continue at any moment: it still holds the slot
        assert run(db_url, waiting)["status"] == RunStatus.QUEUED
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not pid_alive(pid), what="the continued engine to finish")
    row = run(db_url, frozen)
    assert row["status"] == RunStatus.LOST and "no heartbeat" in row["error"]  # not flipped back to completed
    start_queued(db_url)
    row = wait_final(db_url, waiting)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])


@pytest.mark.attack("shared folders")
def test_two_databases_in_one_folder_never_share_a_run_folder(tmp_path, monkeypatch):
    from control.launcher import bootstrap

    monkeypatch.delenv("LAB_RUNS_DIR", raising=False)
    a, b = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    for url in (a, b):
        bootstrap(url)
    assert run_dir_for(a, 5) != run_dir_for(b, 5)
    assert run_dir_for(a, 5).parent.parent == run_dir_for(b, 5).parent.parent == tmp_path / "runs"
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "shared"))
    assert run_dir_for(a, 5) != run_dir_for(b, 5)


@pytest.mark.attack("shared folders")
def test_a_run_folder_that_belongs_to_another_databases_run_is_refused(tmp_path, monkeypatch):
    from control.launcher import bootstrap
    from db import store

    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    a, b = (bootstrap(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db"))
    ra = launch_run(a, quick_config(a), start=False)
    rb = launch_run(b, quick_config(b), start=False)
    assert ra == rb == 1
    shared = tmp_path / "runs" / "00001"  # the layout before runs were keyed by database
    from control.launcher import claim_run_dir

    claim_run_dir(a, ra, shared)
    (shared / "last.pt").write_bytes(b"a's checkpoint")
    store.update_run(b, rb, run_dir=str(shared))
    assert start_queued(b) == []
    row = run(b, rb)
    assert row["status"] == RunStatus.FAILED and "belongs to run 1 of sqlite:///" in row["error"]
    assert "a.db" in row["error"] and (shared / "last.pt").read_bytes() == b"a's checkpoint"
    assert Path(run(a, ra)["run_dir"]).parent.name == "a"


@pytest.mark.attack("shared folders")
def test_labs_of_the_same_name_under_one_runs_folder_get_their_own_and_keep_it(tmp_path, monkeypatch):
    from control.launcher import bootstrap, runs_root

    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "shared"))
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir()
    x, y = (bootstrap(f"sqlite:///{tmp_path / d / 'lab.db'}") for d in ("x", "y"))
    assert runs_root(x) == tmp_path / "shared" / "lab"  # the first to claim the name keeps it readable
    assert runs_root(y).parent == tmp_path / "shared" and runs_root(y).name.startswith("lab-")
    assert runs_root(x) != runs_root(y) and runs_root(y) == runs_root(y)  # and both stay where they are
    assert json.loads((runs_root(y) / "lab.json").read_text())["database"].endswith("y/lab.db")


@pytest.mark.attack("shared folders")
def test_a_hand_typed_resume_refuses_a_folder_of_another_run(tmp_path, monkeypatch):
    from control.cli import main
    from control.launcher import bootstrap, claim_run_dir
    from db import store

    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    a, b = (bootstrap(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db"))
    ra, rb = launch_run(a, quick_config(a), start=False), launch_run(b, quick_config(b), start=False)
    shared = claim_run_dir(a, ra, tmp_path / "runs" / "00001")
    (shared / "last.pt").write_bytes(b"a's checkpoint")
    store.update_run(b, rb, run_dir=str(shared))
    store.mark_ended(b, rb, RunStatus.STOPPED)
    assert main(["train", "--run-id", str(rb), "--resume", "--db", b]) == 1
    row = run(b, rb)
    assert row["status"] == RunStatus.FAILED and "belongs to run 1 of sqlite:///" in row["error"], row["error"]
    assert (shared / "last.pt").read_bytes() == b"a's checkpoint" and metric_rows(b, rb) == {}
