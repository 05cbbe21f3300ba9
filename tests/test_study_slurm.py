"""A study through the Slurm backend: the smallest grid (2 levels x 1 seed, 1 epoch) on a real
single-node Slurm cluster started on localhost by the fixture; every trial is its own Slurm job."""

from __future__ import annotations

from pathlib import Path

import pytest

from control import slurm, studies
from db import queries
from db.models import RunStatus
from tests.lifecycle_support import kill_engines, quick_config, wait_for


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


def test_a_grid_study_runs_every_trial_as_a_slurm_job_and_completes(slurm_cluster, db_url, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("LAB_BACKEND", "slurm")  # how a study's trials pick their backend: like any launch
    study = {
        "base": quick_config(db_url, **{"train.epochs": 1, "train.max_steps_per_epoch": 3, "name": ""}),
        "factors": {"optim.lr": [0.001, 0.01]},
        "repeats": 1,
        "strategy": "grid",
        "objective": {"metric": "val_acc", "direction": "maximize"},
    }
    spec, base, errors = studies.load_study(study, db_url)
    assert not errors
    study_id = studies.create_study(db_url, spec, base)
    runs = queries.study_runs(db_url, study_id)
    assert [r["config"]["optim"]["lr"] for r in runs] == [0.001, 0.01]
    rows = [queries.get_run(db_url, r["id"]) for r in runs]
    jobs = [row["external_id"] for row in rows]
    assert all(row["backend"] == "slurm" for row in rows) and all(jobs) and len(set(jobs)) == 2  # one job each

    state = wait_for(
        lambda: (s := studies.study_state(db_url, study_id))["status"] == "completed" and s,
        300,
        f"study {study_id} to complete through Slurm",
    )
    assert [t["status"] for t in state["trials"]] == ["done", "done"]
    assert sum(g["n"] for g in state["summary"]) == 2
    for r, job in zip(runs, jobs):
        row = queries.get_run(db_url, r["id"])
        assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
        assert row["backend"] == "slurm" and row["external_id"] == job and row["epochs_done"] == 1
        wait_for(  # COMPLETED, or forgotten by Slurm since; the engine exits a moment after its last write
            lambda job=job: slurm.job_state(job) in ("COMPLETED", None), 120, f"Slurm job {job} to end as completed"
        )
        run_dir = Path(row["run_dir"])
        assert f"lab-run-{r['id']}" in (run_dir / "job.sbatch").read_text()
        assert "status completed" in (run_dir / "run.log").read_text()  # written by the job, via sbatch --output
