"""DistributedDataParallel under torchrun, on CPU with the gloo backend and 2 processes: the same
config gives the same metrics as one process (within tolerance: each rank normalises its half of
the batch with its own BatchNorm statistics), and only rank 0 writes, so there is one set of rows."""

import time

from control.launcher import launch_run
from db import queries
from db.models import RunStatus
from tests.conftest import tiny_config


def wait_done(url, run_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = queries.get_run(url, run_id)
        if run["status"] not in ("queued", "running"):
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish")


def test_two_process_ddp_matches_single_process_and_writes_one_set_of_rows(db_url, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")
    base = {"train.epochs": 3, "train.device": "cpu", "optim.lr": 0.002}
    single = launch_run(db_url, tiny_config(**base))
    ddp = launch_run(db_url, tiny_config(**base, **{"train.devices": 2}))
    runs = {rid: wait_done(db_url, rid) for rid in (single, ddp)}
    for rid, run in runs.items():
        assert run["status"] == RunStatus.COMPLETED, (rid, run["error"], open(run["log_path"]).read()[-2000:])
    assert "DistributedDataParallel over 2 processes" in open(runs[ddp]["log_path"]).read()
    assert "DistributedDataParallel" not in open(runs[single]["log_path"]).read()

    hist = queries.metric_history(db_url, [single, ddp])
    for rid in (single, ddp):
        val_acc = hist[(hist.run_id == rid) & (hist.split == "val") & (hist.name == "acc")]
        assert val_acc["epoch"].tolist() == [1, 2, 3]  # exactly one row per epoch: only rank 0 writes
    seen = {rid: len(queries.evaluations(db_url, rid)) for rid in (single, ddp)}
    assert seen[single] == seen[ddp]

    def final(rid, split, name):
        rows = hist[(hist.run_id == rid) & (hist.split == split) & (hist.name == name)]
        return rows.sort_values("epoch")["value"].tolist()

    # Reduced across ranks: the DDP run's train accuracy counts every training image once per epoch.
    for a, b in zip(final(single, "train", "loss"), final(ddp, "train", "loss")):
        assert abs(a - b) <= 0.15 * max(a, b) + 0.02, (final(single, "train", "loss"), final(ddp, "train", "loss"))
    assert abs(final(single, "val", "acc")[-1] - final(ddp, "val", "acc")[-1]) <= 0.05
    assert final(ddp, "val", "acc")[-1] >= 0.9
