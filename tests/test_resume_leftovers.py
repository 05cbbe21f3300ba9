"""Real engines on real files: a resume that finds the temporary file of a save an engine never finished
deletes it and completes, and a runs folder whose path holds a space works end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control.launcher import launch_run, resume_run
from db import queries
from db.models import RunStatus
from tests.lifecycle_support import kill_engines, log_text, quick_config, wait_final

SHORT = {"train.epochs": 3, "train.max_steps_per_epoch": 3, "eval.tta": ["none"]}


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


@pytest.mark.attack("kill -9")
def test_a_resume_deletes_the_temporary_files_of_an_unfinished_save_and_completes(db_url, monkeypatch):
    monkeypatch.setenv("LAB_FAULT", json.dumps({"crash_after_epoch": 2}))
    run_id = launch_run(db_url, quick_config(db_url, **SHORT))
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.FAILED and row["epochs_done"] == 2, (row["error"], row["traceback"])
    monkeypatch.delenv("LAB_FAULT")
    run_dir = Path(row["run_dir"])
    # what engine.fileio.atomic_write leaves when its process dies mid-save: .<name>.<pid>.<id>.tmp
    stale = [run_dir / ".last.pt.4242.0badc0de.tmp", run_dir / ".best.pt.4242.1badc0de.tmp"]
    stale[0].write_bytes((run_dir / "last.pt").read_bytes()[:1000])  # half a checkpoint
    stale[1].write_bytes(b"")
    kept = run_dir / "notes.tmp"  # not one of the writer's (no leading dot): not the engine's to delete
    kept.write_text("mine")

    resume_run(db_url, run_id)
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
    assert row["epochs_done"] == 3
    assert not [p for p in stale if p.exists()] and not list(run_dir.glob(".*.tmp"))
    assert kept.read_text() == "mine"
    log = log_text(db_url, run_id)
    assert all(f"removed {p.name}, left by an engine killed while saving" in log for p in stale), log[-3000:]
    assert "resuming after epoch 2" in log


def test_a_real_run_under_a_runs_folder_with_a_space_completes_with_its_checkpoints_there(
    db_url, tmp_path, monkeypatch
):
    runs = tmp_path / "runs with space"
    monkeypatch.setenv("LAB_RUNS_DIR", str(runs))
    run_id = launch_run(db_url, quick_config(db_url, **{**SHORT, "train.epochs": 2}))  # the local launcher
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
    run_dir = Path(row["run_dir"])
    assert runs.resolve() in run_dir.parents and " " in str(run_dir)
    checkpoints = queries.checkpoints(db_url, run_id)
    assert {c["kind"] for c in checkpoints} >= {"last", "best"}
    for c in checkpoints:
        assert Path(c["path"]).parent == run_dir and Path(c["path"]).stat().st_size > 0
    assert Path(row["log_path"]).parent == run_dir and "completed" in log_text(db_url, run_id).lower()
