"""Scale-out on existing engines: the same configs and code against a real PostgreSQL server and a
real single-node Slurm cluster, both started on localhost by the fixtures."""

import subprocess

import pytest
from sqlalchemy import inspect

from control.launcher import launch_run, refresh_slurm, stop_run
from db import queries
from db.models import RunStatus
from db.session import get_engine
from tests import test_db
from tests.conftest import tiny_config, wait_for


# ------------------------------------------------------------------------------- PostgreSQL
@pytest.mark.attack("PostgreSQL")
def test_migrations_and_db_round_trip_on_postgresql(pg_url):
    assert get_engine(pg_url).dialect.name == "postgresql"
    assert {"runs", "metrics", "latest_metrics", "alembic_version"} <= set(
        inspect(get_engine(pg_url)).get_table_names()
    )
    test_db.test_run_metrics_confusion_checkpoint_round_trip(pg_url)
    test_db.test_rewriting_an_epoch_replaces_its_rows(pg_url)


@pytest.mark.attack("PostgreSQL")
def test_a_real_run_writes_to_postgresql(pg_url):
    run_id = launch_run(pg_url, tiny_config(**{"train.epochs": 2}))
    wait_for(
        lambda: queries.get_run(pg_url, run_id)["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING),
        what="run to finish",
    )
    run = queries.get_run(pg_url, run_id)
    assert run["status"] == RunStatus.COMPLETED, run["error"]
    hist = queries.metric_history(pg_url, [run_id], ["acc"])
    assert hist.query("split == 'val'")["epoch"].tolist() == [1, 2]


# ------------------------------------------------------------------------------- Slurm
def test_slurm_backend_runs_a_job_to_completion_and_scancel_stops_another(slurm_cluster, db_url, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    done_id = launch_run(db_url, tiny_config(**{"train.epochs": 2}), backend="slurm")
    row = queries.get_run(db_url, done_id)
    assert row["backend"] == "slurm" and row["external_id"]
    wait_for(lambda: queries.get_run(db_url, done_id)["status"] == RunStatus.COMPLETED, what="slurm run to complete")
    assert queries.get_run(db_url, done_id)["epochs_done"] == 2

    monkeypatch.setenv("LAB_FAULT", '{"sleep_per_step": 0.2}')  # exported to the job by sbatch
    long_id = launch_run(db_url, tiny_config(**{"train.epochs": 50}), backend="slurm")
    job = queries.get_run(db_url, long_id)["external_id"]
    wait_for(lambda: len(queries.metric_history(db_url, [long_id])) > 0, what="first epoch of the slurm run")
    assert queries.get_run(db_url, long_id)["status"] == RunStatus.RUNNING
    stop_run(db_url, long_id)
    wait_for(lambda: queries.get_run(db_url, long_id)["status"] == RunStatus.STOPPED, what="scancel to stop the run")

    def job_gone():
        out = subprocess.run(
            ["squeue", "-h", "-j", job], capture_output=True, text=True, env=slurm_cluster.env()
        ).stdout
        return out.strip() == ""

    wait_for(job_gone, what="the cancelled job to leave the Slurm queue")
    assert refresh_slurm(db_url) == []  # nothing left for the tracker to fix up
    assert 1 <= queries.get_run(db_url, long_id)["epochs_done"] < 50
