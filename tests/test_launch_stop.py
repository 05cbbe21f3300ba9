"""The Launch and Stop buttons' code path: a real detached subprocess writing to a real SQLite file."""

import pytest

from control.launcher import LaunchRefused, launch_run, pid_alive, stop_run
from db import queries
from db.models import RunStatus
from tests.conftest import tiny_config, wait_for


def test_launch_starts_a_subprocess_whose_metrics_appear_and_stop_ends_it(db_url, monkeypatch):
    # Slow each step down so the run is still going when we stop it.
    monkeypatch.setenv("LAB_FAULT", '{"sleep_per_step": 0.2}')
    run_id = launch_run(db_url, tiny_config(**{"train.epochs": 50}))
    wait_for(lambda: queries.get_run(db_url, run_id)["status"] == RunStatus.RUNNING, what="running")
    pid = queries.get_run(db_url, run_id)["pid"]
    assert pid and pid_alive(pid)
    wait_for(lambda: len(queries.metric_history(db_url, [run_id])) > 0, what="first epoch rows")

    status = stop_run(db_url, run_id, timeout_s=60)
    assert status == RunStatus.STOPPED
    run = queries.get_run(db_url, run_id)
    assert run["status"] == RunStatus.STOPPED and not pid_alive(pid)
    done = run["epochs_done"]
    assert 1 <= done < 50
    assert queries.metric_history(db_url, [run_id], ["acc"]).query("split == 'val'")["epoch"].tolist() == list(
        range(1, done + 1)
    )


def test_invalid_config_launches_nothing(db_url):
    with pytest.raises(LaunchRefused) as exc:
        launch_run(db_url, tiny_config(**{"train.batch_size": 100000}))
    assert any(field == "train.batch_size" for field, _ in exc.value.errors)
    assert queries.list_runs(db_url).empty
