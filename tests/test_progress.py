"""Live progress inside an epoch and in the final evaluation: the engine's phases (train, val, test,
tta:<variant>, saving) with step of steps, images/s and ETA, carried into runs.progress by the engine's
heartbeat thread (throttled: never a write per batch), and shown on Run detail and in the Runs table."""

from __future__ import annotations

import json
import sqlite3

from db import queries, store
from engine.sinks import EventSink
from engine.training.live import LiveProgress
from tests.lifecycle_support import quick_config, wait_final, wait_for

COUNT_WRITES = """
CREATE TABLE IF NOT EXISTS test_progress_writes (n INTEGER PRIMARY KEY, phase TEXT, step INTEGER);
CREATE TRIGGER IF NOT EXISTS test_count_progress AFTER UPDATE OF progress ON runs BEGIN
  INSERT INTO test_progress_writes (phase, step)
  VALUES (json_extract(NEW.progress, '$.phase'), json_extract(NEW.progress, '$.step'));
END;
"""


def _sqlite(url: str) -> sqlite3.Connection:
    return sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)


def _writes(url: str) -> list[tuple[str, int | None]]:
    with _sqlite(url) as c:
        return c.execute("SELECT phase, step FROM test_progress_writes ORDER BY n").fetchall()


class Recorder(EventSink):
    def __init__(self):
        self.seen: list[dict] = []

    def on_progress(self, progress):
        self.seen.append(progress)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_live_progress_reports_each_phase_start_and_then_at_most_once_per_interval():
    sink, clock = Recorder(), Clock()
    live = LiveProgress(sink, every_s=1.0, clock=clock)
    live.phase("train", 100, epoch=2)
    assert sink.seen[-1]["phase"] == "train" and sink.seen[-1]["step"] == 0 and sink.seen[-1]["epoch"] == 2
    for _ in range(40):  # 40 steps of 8 images in 0.4 s: nothing more to report yet
        clock.t += 0.01
        live.advance(8)
    assert len(sink.seen) == 1
    clock.t += 0.6  # 1 s into the phase
    live.advance(8)
    p = sink.seen[-1]
    assert len(sink.seen) == 2 and (p["step"], p["steps"]) == (41, 100)
    assert p["images_per_sec"] == round(41 * 8 / 1.0, 1)
    assert p["eta_s"] == round(1.0 / 41 * 59, 1)
    live.phase("test", 3)  # a new phase is news at once, whatever the interval
    assert [s["phase"] for s in sink.seen] == ["train", "train", "test"] and sink.seen[-1]["epoch"] == 2


def test_a_real_run_shows_its_step_inside_the_epoch_and_its_final_evaluation(db_url, monkeypatch):
    from control.launcher import launch_run, stop_run

    with _sqlite(db_url) as c:
        c.executescript(COUNT_WRITES)  # counts every UPDATE that sets runs.progress, from any process
    steps = 40
    # slow steps and evaluation batches (LAB_FAULT): the phases last long enough to be seen by polling
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.06, "sleep_per_eval_batch": 1.2}))
    cfg = quick_config(
        db_url,
        **{"train.epochs": 2, "train.batch_size": 8, "train.max_steps_per_epoch": steps, "eval.tta": ["none", "hflip"]},
    )
    run_id = launch_run(db_url, cfg)
    try:

        def mid_epoch():
            p = queries.run_progress(db_url, run_id)
            live = p["progress"] or {}
            return (
                p["status"] == "running" and live.get("phase") == "train" and 0 < live["step"] < live["steps"] and live
            )

        live = wait_for(mid_epoch, 180, "a progress row inside a training epoch")
        assert live["steps"] == steps and live["epoch"] in (1, 2)
        assert live["images_per_sec"] > 0 and live["eta_s"] >= 0

        def final_phase():
            p = queries.run_progress(db_url, run_id)
            phase = (p["progress"] or {}).get("phase", "")
            return p["status"] == "running" and (phase == "test" or phase.startswith("tta:")) and p["progress"]

        final = wait_for(final_phase, 180, "a final-evaluation phase")
        assert final["steps"] >= 1 and 0 <= final["step"] <= final["steps"]
        assert wait_final(db_url, run_id)["status"] == "completed"
    finally:
        stop_run(db_url, run_id)
    writes = _writes(db_url)
    phases = [w[0] for w in writes]
    assert phases[0] == "starting"  # the first beat: nothing left of an earlier engine's progress
    assert {"train", "val", "test", "tta:hflip"} <= set(phases), phases
    assert 0 < len(writes) < 2 * steps, f"{len(writes)} progress writes for {2 * steps} training steps"


def test_run_detail_and_the_runs_table_show_the_phase(db_url, tiny):
    from dashboard import plots
    from db.models import utcnow
    from tests.test_pages_core import open_page

    run_id = store.create_run(db_url, tiny(**{"train.epochs": 3}), name="evaluating", status="running")
    progress = {"phase": "test", "step": 8, "steps": 20, "epoch": 3, "images_per_sec": 950.0, "eta_s": 12.0}
    # a fresh heartbeat and no pid yet: the page's lost-run check leaves it running
    store.update_run(db_url, run_id, epochs_done=3, progress=progress, heartbeat_at=utcnow())
    at = open_page("run_detail", run=run_id)
    bars = [p.proto.text for p in at.get("progress")]
    assert any("final evaluation: test 40%" in t and "step 8 of 20" in t and "12 s left" in t for t in bars), bars

    status = plots.runs_table(queries.list_runs(db_url)).set_index("id").loc[run_id, "status"]
    assert status.endswith("running · final evaluation: test 40%")
    store.update_run(db_url, run_id, progress={**progress, "phase": "train", "epoch": 2, "step": 5})
    status = plots.runs_table(queries.list_runs(db_url)).set_index("id").loc[run_id, "status"]
    assert status.endswith("running · epoch 2: training 25%")
