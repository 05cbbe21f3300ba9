"""kill -9 between an epoch's rows and its checkpoint, at the exact moment (a sink that SIGKILLs the
engine right after the real sinks saw the event, not a timed guess): after resume every epoch has its
rows exactly once, with the numbers of a run that was never interrupted."""

from __future__ import annotations

import json

import pytest

from control.launcher import launch_run, refresh_lost, resume_run
from db import queries
from db.models import RunStatus
from tests.lifecycle_support import kill_engines, metric_rows, quick_config, run, wait_final, wait_for

CFG = {
    "train.epochs": 3,
    "train.max_steps_per_epoch": 4,
    "train.deterministic": True,
    "eval.tta": ["none"],
    "train.keep_last": 5,
}


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


def _killed_then_resumed(db_url, monkeypatch, kill_after) -> int:
    monkeypatch.setenv("LAB_FAULT", json.dumps({"kill_after": kill_after}))
    run_id = launch_run(db_url, quick_config(db_url, **CFG), name=f"killed after {kill_after}")
    pid = wait_for(lambda: run(db_url, run_id)["pid"], what="the engine's pid")
    wait_for(lambda: refresh_lost(db_url) or run(db_url, run_id)["status"] == RunStatus.LOST, what=f"pid {pid} gone")
    assert run(db_url, run_id)["status"] == RunStatus.LOST
    monkeypatch.delenv("LAB_FAULT")
    resume_run(db_url, run_id)
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.COMPLETED, row["error"]
    return run_id


@pytest.mark.parametrize("kill_after", [["epoch_end", 2], ["checkpoint:last", 2]])
@pytest.mark.attack("kill -9")
def test_a_kill_between_rows_and_checkpoint_loses_no_epoch_and_counts_none_twice(db_url, monkeypatch, kill_after):
    straight = launch_run(db_url, quick_config(db_url, **CFG), name="uninterrupted")
    assert wait_final(db_url, straight)["status"] == RunStatus.COMPLETED
    expected = metric_rows(db_url, straight)

    resumed = _killed_then_resumed(db_url, monkeypatch, kill_after)
    rows = metric_rows(db_url, resumed)
    assert {epoch for epoch, _, _ in rows} == {1, 2, 3}  # no epoch missing
    history = queries.metric_history(db_url, [resumed])
    per_key = history.groupby(["epoch", "split", "name"]).size()
    assert (per_key == 1).all()  # and none written twice
    assert rows == expected  # the same numbers as the run that was never killed
    assert run(db_url, resumed)["epochs_done"] == 3
