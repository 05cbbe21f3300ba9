"""Studies at work and at scale.

1. Scheduling overhead per trial, on real engines: the same small grid (digits, small_cnn, 1 epoch)
   run as a study and as plain queued runs, one at a time. Reported: each trial's training time, the
   hand-off from a run's end to the next engine's start (both ways: the difference is the study's
   share of each trial's wall time), and the study's own DB work timed in this process (queueing one
   trial; the `advance` a trial's end makes: tell Optuna its result, claim the next; a no-op `advance`).
2. The Studies page's server-side build time (AppTest, cold caches) and `study_state` alone, on a
   study of 500 finished trials x 50 epochs written through the real schema.

    .venv/bin/python bench/bench_study.py [--trials 6] [--pages 500] [--epochs 50] [--dir /tmp/bench_study]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import plotly.express  # noqa: E402,F401  (as dashboard/app.py: pandas/plotly first)
from sqlalchemy import insert  # noqa: E402

from control import studies  # noqa: E402
from control.launcher import bootstrap, launch_run, start_queued  # noqa: E402
from control.study_spec import StudySpec  # noqa: E402
from db import queries, store  # noqa: E402
from db.models import LatestMetric, Metric, Run, RunStatus, utcnow  # noqa: E402
from db.session import get_engine  # noqa: E402


def _lab(root: Path) -> str:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.environ["LAB_RUNS_DIR"] = str(root / "runs")
    url = f"sqlite:///{root / 'lab.db'}"
    os.environ["LAB_DB_URL"] = url
    bootstrap(url)
    return url


def _base() -> dict:
    return {
        "data": {"dataset": "digits"},
        "model": {"source": "custom", "name": "small_cnn"},
        "train": {"epochs": 1, "batch_size": 64},
        "eval": {"tta": ["none"]},
    }


def _wait_final(url: str, ids: list[int]) -> list[dict]:
    while True:
        rows = [queries.get_run(url, i) for i in ids]
        if all(r["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING) for r in rows):
            return rows
        time.sleep(0.5)


def _handoffs(rows: list[dict]) -> tuple[list[float], list[float]]:
    rows = sorted(rows, key=lambda r: r["started_at"])
    train = [(r["ended_at"] - r["started_at"]).total_seconds() for r in rows]
    hand = [(b["started_at"] - a["ended_at"]).total_seconds() for a, b in zip(rows, rows[1:])]
    return train, hand


def scheduling(root: Path, n: int) -> dict:
    os.environ["LAB_MAX_CONCURRENT"] = "1"
    lrs = [round(0.002 * (i + 1), 4) for i in range(n)]
    url = _lab(root / "plain")
    plain = [launch_run(url, {**_base(), "optim": {"lr": lr}}) for lr in lrs]
    p_train, p_hand = _handoffs(_wait_final(url, plain))

    url = _lab(root / "study")
    spec = StudySpec.model_validate({"base": _base(), "factors": {"optim.lr": lrs}, "strategy": "grid"})
    _warm(url)  # per process, not per trial: importing Optuna, opening its storage on this DB
    t0 = time.perf_counter()
    study_id = studies.create_study(url, spec, _base(), start=False)
    create_s = time.perf_counter() - t0
    start_queued(url)  # as a plain launch does: not the study's work
    rows = _wait_final(url, [r["id"] for r in queries.study_runs(url, study_id)])
    s_train, s_hand = _handoffs(rows)
    studies.advance(url, study_id, start=False)  # warm: this process's first look at the finished study
    t0 = time.perf_counter()
    for _ in range(5):
        studies.advance(url, study_id, start=False)
    noop_s = (time.perf_counter() - t0) / 5
    advance_s = _advance_after_a_trial(root / "tell", n)
    db_per_trial = create_s / n + advance_s  # queued once, advanced once when it ends
    med = statistics.median
    return {
        "trials": n,
        "train_s": med(s_train),
        "handoff_plain_s": med(p_hand),
        "handoff_study_s": med(s_hand),
        "queue_per_trial_s": create_s / n,
        "advance_s": advance_s,
        "noop_advance_s": noop_s,
        "db_per_trial_s": db_per_trial,
        "overhead_pct": 100 * db_per_trial / med(s_train),
        "handoff_delta_pct": 100 * (med(s_hand) - med(p_hand)) / med(s_train),
        "plain_train_s": med(p_train),
    }


def _warm(url: str) -> None:
    import optuna  # noqa: F401

    from control.optuna_db import optuna_storage

    optuna_storage(url).get_all_studies()


def _advance_after_a_trial(root: Path, n: int) -> float:
    """Median time of the `advance` a trial's end makes (its result told to Optuna, nothing left to
    queue), on a grid study of n queued trials whose runs are marked completed one by one here."""
    url = _lab(root)
    spec = StudySpec.model_validate(
        {"base": _base(), "factors": {"optim.lr": [round(0.002 * (i + 1), 4) for i in range(n)]}, "strategy": "grid"}
    )
    _warm(url)
    study_id = studies.create_study(url, spec, _base(), start=False)
    times = []
    for r in queries.study_runs(url, study_id):
        store.add_epoch(url, r["id"], 1, {("val", "acc"): 0.5, ("val", "loss"): 1.0})
        store.update_run(url, r["id"], status=RunStatus.COMPLETED, ended_at=utcnow())
        t0 = time.perf_counter()
        studies.advance(url, study_id, start=False)
        times.append(time.perf_counter() - t0)
    assert queries.get_study(url, study_id)["status"] == "completed"
    return statistics.median(times)


def fill_study(url: str, n_trials: int, epochs: int, seed: int = 0) -> int:
    """A finished grid study (5 x 5 configurations x n/25 seeds) written in bulk through the real schema."""
    import optuna

    from control.optuna_db import optuna_storage

    rng = np.random.default_rng(seed)
    lrs, wds = [0.0003, 0.001, 0.003, 0.01, 0.03], [0.0, 0.01, 0.03, 0.1, 0.3]
    repeats = max(1, n_trials // 25)
    base = _base() | {"train": {"epochs": epochs, "batch_size": 64}}
    spec = StudySpec.model_validate(
        {"base": base, "factors": {"optim.lr": lrs, "optim.weight_decay": wds}, "repeats": repeats}
    )
    name = f"bench-{seed}"
    optuna.create_study(study_name=name, storage=optuna_storage(url), direction="maximize")
    study_id = store.create_study(url, "bench", {"study": spec.model_dump(mode="json"), "base": base}, name)
    store.claim_study_config(url, study_id, 1)
    store.set_study_status(url, study_id, "completed")
    dists = studies.distributions(spec)
    runs, metrics, trials, number = [], [], [], 0
    now = utcnow()
    for lr in lrs:
        for wd in wds:
            quality = 0.95 - 0.2 * abs(np.log10(lr) + 2.3) - 0.3 * wd
            for r in range(repeats):
                cfg = {**base, "optim": {"lr": lr, "weight_decay": wd}, "train": {**base["train"], "seed": r}}
                curve = quality * (1 - np.exp(-np.arange(1, epochs + 1) / 8)) + rng.normal(0, 0.01, epochs)
                runs.append(
                    dict(
                        name=f"{name} {number}",
                        config=cfg,
                        status="completed",
                        dataset="digits",
                        model="custom:x",
                        tags=[],
                        notes="",
                        backend="local",
                        created_at=now,
                        started_at=now,
                        ended_at=now,
                        stop_requested=False,
                        resume_requested=False,
                        epochs_planned=epochs,
                        epochs_done=epochs,
                        study_id=study_id,
                        trial_number=number,
                    )
                )
                trials.append(
                    optuna.trial.create_trial(
                        params={"optim.lr": lr, "optim.weight_decay": wd}, distributions=dists, value=float(curve[-1])
                    )
                )
                number += 1
                metrics.append(curve)
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Run), runs)
    ids = [r["id"] for r in queries.study_runs(url, study_id)]
    rows, lrows = [], []
    for run_id, curve in zip(ids, metrics):
        for e, v in enumerate(curve, 1):
            rows += [
                dict(run_id=run_id, epoch=e, split=sp, name=nm, value=float(val))
                for sp, nm, val in (
                    ("val", "acc", v),
                    ("val", "loss", 1 - v),
                    ("train", "acc", v + 0.02),
                    ("train", "loss", 0.98 - v),
                )
            ]
        lrows += [
            dict(
                run_id=run_id,
                split="val",
                name="acc",
                epoch=epochs,
                value=float(curve[-1]),
                best_value=float(curve.max()),
                best_epoch=int(curve.argmax()) + 1,
            )
        ]
    with engine.begin() as conn:
        conn.execute(insert(Metric), rows)
        conn.execute(insert(LatestMetric), lrows)
    optuna.load_study(study_name=name, storage=optuna_storage(url)).add_trials(trials)
    return study_id


def page_build(root: Path, n_trials: int, epochs: int, repeat: int) -> dict:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    url = _lab(root / "page")
    study_id = fill_study(url, n_trials, epochs)
    t_state = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        state = studies.study_state(url, study_id)
        t_state.append(time.perf_counter() - t0)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300).run()
    at.switch_page("views/studies.py")
    at.query_params["study"] = str(study_id)
    at.run()  # warm-up: imports, Optuna's fANOVA fitted once (cached by finished-trial count)
    builds, cold = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        at.run()
        builds.append(time.perf_counter() - t0)
    for _ in range(2):
        st.cache_data.clear()
        t0 = time.perf_counter()
        at.run()
        cold.append(time.perf_counter() - t0)
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return {
        "trials": len(state["trials"]),
        "epochs": epochs,
        "study_state_s": statistics.median(t_state),
        "page_s": statistics.median(builds),
        "page_cold_s": statistics.median(cold),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6, help="real 1-epoch runs for the scheduling measurement")
    ap.add_argument("--pages", type=int, default=500, help="finished trials in the page-build study")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/bench_study")
    ap.add_argument("--skip-scheduling", action="store_true")
    ap.add_argument("--skip-pages", action="store_true")
    args = ap.parse_args(argv)
    root = Path(args.dir)
    print(
        f"# bench_study {dt.date.today()} on {platform.node()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    if not args.skip_scheduling:
        s = scheduling(root, args.trials)
        print(
            f"scheduling ({s['trials']} trials, 1 epoch each): training {s['train_s']:.2f} s per trial; "
            f"hand-off end->next engine start {s['handoff_study_s']:.2f} s in a study vs {s['handoff_plain_s']:.2f} s "
            f"for plain queued runs ({s['handoff_delta_pct']:+.2f}% of a trial); study DB work per trial "
            f"{s['db_per_trial_s'] * 1000:.0f} ms (queue {s['queue_per_trial_s'] * 1000:.0f} ms + advance at a "
            f"trial's end {s['advance_s'] * 1000:.0f} ms) = {s['overhead_pct']:.2f}% of a trial; a no-op advance "
            f"{s['noop_advance_s'] * 1000:.0f} ms"
        )
    if args.skip_pages:
        return 0
    p = page_build(root, args.pages, args.epochs, args.repeat)
    print(
        f"studies page ({p['trials']} finished trials x {p['epochs']} epochs): server-side build {p['page_s']:.3f} s "
        f"(cold caches {p['page_cold_s']:.3f} s); study_state alone {p['study_state_s']:.3f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
