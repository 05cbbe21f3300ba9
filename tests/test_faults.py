"""Fault injection with real engine processes and a real SQLite file: kill -9, four engines and a
busy dashboard on one file, a truncated newest checkpoint, NaN loss, a crash, a dataset that
disappears, an unreadable image, a malicious checkpoint. Nothing finished may be lost."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from control.launcher import LaunchRefused, launch_run, pid_alive, refresh_lost, resume_run, start_queued
from db import queries, store
from db.models import RunStatus
from engine.training import checkpoint as ckpt
from tests.conftest import tiny_config
from tests.lifecycle_support import (
    TIMING_METRICS,
    kill_engines,
    log_text,
    metric_rows,
    python_proc,
    quick_config,
    run,
    wait_final,
    wait_for,
)

METRICS_PER_EPOCH = 8  # train loss, acc, lr, epoch_seconds, images_per_sec, data_wait; val loss, acc


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


def _last_saved(url: str, run_id: int) -> int:
    """The epoch of the run's resume point (last.pt) as the DB records it, 0 before the first."""
    return max((c["epoch"] for c in queries.checkpoints(url, run_id) if c["kind"] == "last"), default=0)


@pytest.mark.attack("kill -9")
def test_kill9_mid_epoch_is_lost_at_once_keeps_finished_epochs_and_resume_completes(db_url, monkeypatch):
    monkeypatch.setenv("LAB_HEARTBEAT_STALE_S", "8")
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.3}))
    run_id = launch_run(
        db_url, quick_config(db_url, **{"train.epochs": 4, "train.max_steps_per_epoch": 5, "eval.tta": ["none"]})
    )
    # two finished epochs with their resume point: an epoch's rows land before its last.pt, and a kill
    # between the two redoes that epoch on resume (same numbers, new timings), which is not this test
    wait_for(lambda: _last_saved(db_url, run_id) >= 2, what="two finished epochs and their resume point")
    pid = run(db_url, run_id)["pid"]
    before = metric_rows(db_url, run_id, with_timing=True)
    saved = _last_saved(db_url, run_id)
    os.killpg(pid, signal.SIGKILL)  # mid-epoch: no chance to say goodbye
    wait_for(lambda: not pid_alive(pid), what="the engine to die")

    assert refresh_lost(db_url) == [run_id]  # one look is enough: the process is gone, no need to wait for staleness
    row = run(db_url, run_id)
    assert row["status"] == RunStatus.LOST and row["error"] == "the engine process is gone"
    done = row["epochs_done"]
    assert 2 <= done < 4
    after = metric_rows(db_url, run_id, with_timing=True)
    assert after == before or set(after) > set(before)  # the epoch that ended while we looked may have landed too
    assert {k[0] for k in after} == set(range(1, done + 1)) and len(after) == done * METRICS_PER_EPOCH

    monkeypatch.delenv("LAB_FAULT")
    resume_run(db_url, run_id)
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
    assert row["epochs_done"] == 4  # the planned number of epochs
    final = metric_rows(db_url, run_id, with_timing=True)
    assert len(final) == 4 * METRICS_PER_EPOCH
    kept = {k: v for k, v in after.items() if k[0] <= saved}
    assert {k: final[k] for k in kept} == kept  # epochs up to the resume point untouched, timings included
    redone = [k for k in after if k[0] > saved and k[2] not in TIMING_METRICS]  # rows landed, last.pt not yet
    assert all(final[k] == pytest.approx(after[k]) for k in redone)  # trained again to the same numbers
    log = log_text(db_url, run_id)  # the resume point: epoch 2's last.pt, or a later one saved before the kill
    assert any(f"resuming after epoch {e}" in log for e in range(saved, done + 1)), log[-2000:]


@pytest.mark.attack("concurrent runs")
def test_four_engines_and_a_busy_dashboard_on_one_sqlite_file_lose_no_row(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "4")
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.05}))
    epochs = 6
    cfg = quick_config(
        db_url,
        **{"train.epochs": epochs, "train.max_steps_per_epoch": 3, "train.keep_last": 2, "eval.tta": ["none", "hflip"]},
    )
    # The dashboard: reads every view in a loop and writes too (refresh_lost, tags), until told to stop.
    stop_file = tmp_path / "stop-reading"
    code = f"""
import json, pathlib, time
from db import queries, store
from control.launcher import refresh_lost
url, stop = {db_url!r}, pathlib.Path({str(stop_file)!r})
reads = writes = errors = 0
while not stop.exists():
    try:
        runs = queries.list_runs(url)
        ids = runs["id"].tolist() if not runs.empty else []
        queries.metric_history(url, ids)
        for i in ids:
            queries.get_run(url, i); queries.latest_confusion(url, i); queries.checkpoints(url, i)
            store.set_tags_notes(url, i, ["watched"], f"read {{reads}}")
            writes += 1
        refresh_lost(url)
        reads += 1; writes += 1
        time.sleep(0.02)  # a busy dashboard, not a CPU hog: the 2 cores are for the engines
    except Exception as exc:
        errors += 1
        print("reader error:", repr(exc), flush=True)
print(json.dumps({{"reads": reads, "writes": writes, "errors": errors}}), flush=True)
"""
    dashboard = python_proc(code)
    try:
        ids = [launch_run(db_url, cfg, name=f"engine {i}") for i in range(4)]
        rows = [wait_final(db_url, i, timeout=400) for i in ids]
    finally:
        stop_file.touch()
        out, err = dashboard.communicate(timeout=120)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["errors"] == 0, out + err
    assert report["reads"] > 0
    assert [r["status"] for r in rows] == [RunStatus.COMPLETED] * 4, [(r["status"], r["error"]) for r in rows]

    expected = 4 * epochs * METRICS_PER_EPOCH
    found = len(queries.metric_history(db_url, ids))
    print(
        f"\n4 engines + dashboard: metric rows expected {expected}, found {found}; "
        f"dashboard reads {report['reads']}, writes {report['writes']}, errors {report['errors']}"
    )
    assert found == expected
    for i in ids:
        assert sorted(queries.confusion_matrices(db_url, i, "val")) == list(range(1, epochs + 1))
        assert run(db_url, i)["epochs_done"] == epochs and run(db_url, i)["tags"] == ["watched"]
        assert {(e["split"], e["checkpoint"]) for e in queries.evaluations(db_url, i)} == {
            ("test", "best"),
            ("val", "best"),
        }
        assert sorted(queries.tta_results(db_url, [i])["variant"]) == ["hflip", "none"]
        kinds = [c["kind"] for c in queries.checkpoints(db_url, i)]
        assert kinds.count("last") == 1 and kinds.count("best") == 1 and kinds.count("epoch") == 2


def _fail_after_epoch_3(db_url, monkeypatch) -> int:
    monkeypatch.setenv("LAB_FAULT", json.dumps({"crash_after_epoch": 3}))
    run_id = launch_run(
        db_url,
        quick_config(
            db_url,
            **{
                "train.epochs": 4,
                "train.max_steps_per_epoch": 4,
                "eval.tta": ["none"],
                "train.keep_last": 5,
                "train.epoch_checkpoint": "full",  # epoch snapshots a resume can fall back on
            },
        ),
    )
    wait_final(db_url, run_id)
    monkeypatch.delenv("LAB_FAULT")
    return run_id


@pytest.mark.attack("crash and bad checkpoints")
def test_crash_fails_with_traceback_and_a_truncated_newest_checkpoint_falls_back_on_resume(db_url, monkeypatch):
    run_id = _fail_after_epoch_3(db_url, monkeypatch)
    row = run(db_url, run_id)
    assert row["status"] == RunStatus.FAILED and row["error"] == "RuntimeError: injected crash after epoch 3"
    assert "Traceback" in row["traceback"] and "injected crash" in row["traceback"]
    assert row["epochs_done"] == 3
    original = metric_rows(db_url, run_id)
    assert {k[0] for k in original} == {1, 2, 3}  # all completed epochs stay

    run_dir = Path(row["run_dir"])
    for newest in (run_dir / "last.pt", run_dir / "epoch_0003.pt"):  # both hold epoch 3: cut them in half
        data = newest.read_bytes()
        newest.write_bytes(data[: len(data) // 2])
    resume_run(db_url, run_id)
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.COMPLETED, (row["error"], row["traceback"])
    log = log_text(db_url, run_id)
    assert "checkpoint last.pt is unreadable" in log and "checkpoint epoch_0003.pt is unreadable" in log
    assert "resuming after epoch 2" in log
    assert row["epochs_done"] == 4
    resumed = metric_rows(db_url, run_id)
    assert {k[0] for k in resumed} == {1, 2, 3, 4}
    assert {k: v for k, v in resumed.items() if k[0] <= 3} == original  # epoch 3 re-done, to the same numbers
    assert ckpt.load(run_dir / "last.pt")["epoch"] == 4


@pytest.mark.attack("crash and bad checkpoints")
def test_nan_loss_fails_at_once_with_that_reason(db_url, monkeypatch):
    steps = 4
    monkeypatch.setenv("LAB_FAULT", json.dumps({"nan_at_step": 2 * steps + 1}))  # epoch 3, its 2nd step (0-based 9th)
    run_id = launch_run(
        db_url, quick_config(db_url, **{"train.epochs": 5, "train.max_steps_per_epoch": steps, "eval.tta": ["none"]})
    )
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.FAILED
    assert row["error"].startswith("loss became nan at epoch 3, step 2")
    assert "TrainingFailed" in row["traceback"]
    assert row["epochs_done"] == 2
    assert {k[0] for k in metric_rows(db_url, run_id)} == {1, 2}


def write_digits_folder(root: Path, per_class: int = 12) -> Path:
    """The digits as an ImageFolder of real PNG files: root/<class>/<n>.png."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    counts = {}
    for img, label in zip(d.images, d.target):
        if counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8)).save(root / str(label) / f"{counts[label]}.png")
    return root


@pytest.mark.parametrize("fault", ["dataset deleted", "unreadable image"])
@pytest.mark.attack("dataset inputs")
def test_dataset_faults_fail_the_run_cleanly_and_are_refused_before_the_next_launch(db_url, tmp_path, fault):
    folder = write_digits_folder(tmp_path / "folder")
    store.upsert_dataset(db_url, "folder", "imagefolder", str(folder))
    cfg = tiny_config(**{"data.dataset": "folder", "train.batch_size": 16, "train.epochs": 1, "eval.tta": ["none"]})
    run_id = launch_run(db_url, cfg, start=False)  # passes preflight: the data is fine right now
    if fault == "dataset deleted":
        for f in folder.rglob("*.png"):
            f.unlink()
        for d in sorted(folder.iterdir()):
            d.rmdir()
        folder.rmdir()
        message = f"DatasetError: image folder not found: {folder}"
    else:
        (folder / "3" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
        message = f"DatasetError: unreadable image {folder / '3' / '2.png'}"
    assert start_queued(db_url) == [run_id]
    row = wait_final(db_url, run_id)
    assert row["status"] == RunStatus.FAILED
    assert row["error"].startswith(message), row["error"]
    assert "Traceback" in row["traceback"] and "DatasetError" in row["traceback"]
    assert len(row["error"]) < 600 and "\n" not in row["error"]  # short, for the runs table

    with pytest.raises(LaunchRefused) as refused:  # and the next launch is refused up front
        launch_run(db_url, cfg)
    assert [f for f, _ in refused.value.errors] == ["data.dataset"]
    assert message.removeprefix("DatasetError: ") in refused.value.errors[0][1]
    assert queries.list_runs(db_url)["id"].tolist() == [run_id]


class _Exploit:
    """A pickle that runs code when unpickled: what weights_only=True loading must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.attack("crash and bad checkpoints")
def test_checkpoints_are_atomic_load_weights_only_and_skip_malicious_or_truncated_files(tmp_path):
    run_dir = tmp_path / "run"
    good = {"epoch": 2, "model": {"w": torch.ones(3)}, "optimizer": {"state": {}, "param_groups": []}}
    ckpt.save_atomic(good, ckpt.epoch_path(run_dir, 2))
    ckpt.save_atomic({**good, "epoch": 1}, ckpt.epoch_path(run_dir, 1))
    marker = tmp_path / "pwned"
    torch.save({"epoch": 3, "model": _Exploit(marker), "optimizer": {}}, run_dir / "last.pt")  # not via save_atomic
    messages = []
    state = ckpt.load_resume_point(run_dir, log=messages.append)
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.ones(3))
    assert not marker.exists()
    assert messages == ["checkpoint last.pt is unreadable (UnpicklingError); trying the previous one"]

    # A save that fails half-way leaves the previous file intact and no temporary file behind.
    with pytest.raises(Exception):  # noqa: B017  (whatever pickle raises for a lambda)
        ckpt.save_atomic({"epoch": 3, "model": lambda: None}, ckpt.epoch_path(run_dir, 2))
    assert ckpt.load(ckpt.epoch_path(run_dir, 2))["epoch"] == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["epoch_0001.pt", "epoch_0002.pt", "last.pt"]

    # Truncated everywhere: nothing readable, so resume refuses in one line instead of retraining from
    # epoch 1 over the finished epochs; only a folder without any checkpoint starts from scratch.
    for p in run_dir.iterdir():
        p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ckpt.NoResumePoint, match=r"^cannot resume: no checkpoint in .*last\.pt unreadable"):
        ckpt.load_resume_point(run_dir, log=messages.append)
    assert ckpt.load_resume_point(tmp_path / "empty", log=messages.append) is None
