"""Dashboard at scale: server-side time to build the Runs page and the Compare page (10 runs) on a DB of
1,000 runs x 100 epochs x 6 metrics, against a naive query-everything baseline measured in the same run.

    .venv/bin/python bench/bench_ui.py [--runs 1000] [--epochs 100] [--repeat 5] [--db /tmp/bench_ui/lab.db]

The DB is filled through the real schema (migrated by db.session.init_db) with bulk inserts shaped like
the engine's writes: narrow metric rows, latest_metrics kept as db.store keeps it, a val confusion
matrix per epoch, a test evaluation (per-class metrics, confusion, 1,000 predictions) and 3 TTA variants
per run. Timings are medians of --repeat after one warm-up; "AppTest" rows run the real page scripts
with cold st.cache_data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotly  # noqa: E402
import plotly.express  # noqa: E402,F401  (as dashboard/app.py: pandas/plotly first)
from sqlalchemy import func, insert, select, text  # noqa: E402

from db import queries  # noqa: E402
from db.models import ConfusionMatrix, Evaluation, LatestMetric, Metric, Run, RunStatus, TTAResult, utcnow  # noqa: E402
from db.session import get_engine, init_db, read  # noqa: E402
from engine.metrics import lower_is_better  # noqa: E402

NUM_CLASSES = 10
METRICS = [
    ("train", "acc"),
    ("train", "loss"),
    ("val", "acc"),
    ("val", "loss"),
    ("train", "lr"),
    ("train", "epoch_seconds"),
]


# ------------------------------------------------------------------------------------- filling the DB
def _config(i: int, rng) -> dict:
    from engine.config import ExperimentConfig

    cfg = ExperimentConfig().model_dump(mode="json")
    cfg["name"] = f"sweep-{i:04d}"
    cfg["data"]["dataset"] = ["fashion_mnist", "digits"][i % 2]
    cfg["optim"]["lr"] = float(10 ** rng.uniform(-4, -1))
    cfg["train"]["batch_size"] = int(rng.choice([64, 128, 256, 512]))
    cfg["train"]["epochs"] = 100
    cfg["train"]["seed"] = i
    cfg["schedule"]["name"] = str(rng.choice(["cosine", "onecycle", "none"]))
    cfg["augment"]["train"] = [{"name": "HorizontalFlip", "p": 0.5, "params": {}}] * int(rng.integers(0, 3))
    cfg["loss"]["label_smoothing"] = float(rng.choice([0.0, 0.1]))
    return cfg


def _curves(epochs: int, lr: float, rng) -> dict[tuple[str, str], np.ndarray]:
    e = np.arange(1, epochs + 1)
    tau = rng.uniform(5, 30)
    top = rng.uniform(0.85, 0.95)
    train_acc = np.clip(top + 0.04 - (top - 0.1) * np.exp(-e / tau) + rng.normal(0, 0.004, epochs), 0, 1)
    val_acc = np.clip(top - (top - 0.1) * np.exp(-e / tau) + rng.normal(0, 0.01, epochs), 0, 1)
    return {
        ("train", "acc"): train_acc,
        ("val", "acc"): val_acc,
        ("train", "loss"): -np.log(np.clip(train_acc, 0.05, 0.999)) + rng.normal(0, 0.01, epochs) ** 2,
        ("val", "loss"): -np.log(np.clip(val_acc, 0.05, 0.999)) + 0.05 + rng.normal(0, 0.02, epochs) ** 2,
        ("train", "lr"): lr * 0.5 * (1 + np.cos(np.pi * (e - 1) / epochs)),
        ("train", "epoch_seconds"): rng.normal(12.0, 0.5, epochs),
    }


def _confusion(acc: float, n_per_class: int, rng) -> np.ndarray:
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for c in range(NUM_CLASSES):
        right = int(rng.binomial(n_per_class, acc))
        cm[c, c] = right
        cm[c] += np.bincount(rng.integers(0, NUM_CLASSES, n_per_class - right), minlength=NUM_CLASSES)
    return cm


def _per_class(cm: np.ndarray) -> dict:
    from engine.training.evaluate import per_class_metrics

    return per_class_metrics(cm)


def fill(url: str, n_runs: int, epochs: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    engine = get_engine(url)
    t0 = time.perf_counter()
    now = utcnow()
    runs, metrics, latest, confusions, evals, ttas = [], [], [], [], [], []
    for i in range(1, n_runs + 1):
        cfg = _config(i, rng)
        started = now - dt.timedelta(hours=n_runs - i + 1)
        runs.append(
            {
                "id": i,
                "name": cfg["name"],
                "config": cfg,
                "status": RunStatus.COMPLETED,
                "dataset": cfg["data"]["dataset"],
                "model": "custom:small_cnn",
                "tags": ["bench"] if i % 3 == 0 else [],
                "notes": "",
                "backend": "local",
                "created_at": started,
                "started_at": started,
                "ended_at": started + dt.timedelta(minutes=20),
                "heartbeat_at": started + dt.timedelta(minutes=20),
                "stop_requested": False,
                "resume_requested": False,
                "epochs_planned": epochs,
                "epochs_done": epochs,
                "device": "cpu",
            }
        )
        curves = _curves(epochs, cfg["optim"]["lr"], rng)
        for (split, name), values in curves.items():
            metrics.extend(
                {"run_id": i, "epoch": e + 1, "split": split, "name": name, "value": float(v)}
                for e, v in enumerate(values)
            )
            best_i = int(np.argmin(values) if lower_is_better(name) else np.argmax(values))
            latest.append(
                {
                    "run_id": i,
                    "split": split,
                    "name": name,
                    "epoch": epochs,
                    "value": float(values[-1]),
                    "best_value": float(values[best_i]),
                    "best_epoch": best_i + 1,
                }
            )
        for e in range(epochs):
            confusions.append(
                {
                    "run_id": i,
                    "epoch": e + 1,
                    "split": "val",
                    "matrix": _confusion(float(curves[("val", "acc")][e]), 30, rng).tolist(),
                }
            )
        test_acc = float(curves[("val", "acc")][-1] - 0.01)
        cm = _confusion(test_acc, 100, rng)
        target = np.repeat(np.arange(NUM_CLASSES), 100)
        pred = np.where(rng.random(1000) < test_acc, target, rng.integers(0, NUM_CLASSES, 1000))
        evals.append(
            {
                "run_id": i,
                "split": "test",
                "epoch": epochs,
                "checkpoint": "best",
                "accuracy": test_acc,
                "loss": float(-math.log(max(test_acc, 0.05))),
                "per_class": _per_class(cm),
                "confusion": cm.tolist(),
                "predictions": {
                    "target": target.tolist(),
                    "pred": pred.tolist(),
                    "confidence": np.round(rng.uniform(0.3, 1, 1000), 5).tolist(),
                    "loss": np.round(rng.exponential(0.3, 1000), 5).tolist(),
                },
                "created_at": started + dt.timedelta(minutes=20),
            }
        )
        latest.append(
            {
                "run_id": i,
                "split": "test",
                "name": "acc",
                "epoch": epochs,
                "value": test_acc,
                "best_value": test_acc,
                "best_epoch": epochs,
            }
        )
        for variant, delta in (
            ("none", 0.0),
            ("hflip", rng.normal(0.004, 0.003)),
            ("dihedral8", rng.normal(-0.01, 0.005)),
        ):
            acc = float(np.clip(test_acc + delta, 0, 1))
            ttas.append(
                {
                    "run_id": i,
                    "split": "test",
                    "checkpoint": "best",
                    "variant": variant,
                    "accuracy": acc,
                    "per_class": {
                        "accuracy": np.clip(
                            np.full(NUM_CLASSES, acc) + rng.normal(0, 0.03, NUM_CLASSES), 0, 1
                        ).tolist(),
                        "f1": np.clip(np.full(NUM_CLASSES, acc) + rng.normal(0, 0.03, NUM_CLASSES), 0, 1).tolist(),
                    },
                    "created_at": now,
                }
            )
    with engine.begin() as conn:
        conn.execute(insert(Run), runs)
        for chunk in range(0, len(metrics), 100_000):
            conn.execute(insert(Metric), metrics[chunk : chunk + 100_000])
        conn.execute(insert(LatestMetric), latest)
        conn.execute(insert(ConfusionMatrix), confusions)
        conn.execute(insert(Evaluation), evals)
        conn.execute(insert(TTAResult), ttas)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    return {"seconds": time.perf_counter() - t0, "metric_rows": len(metrics), "confusion_rows": len(confusions)}


# ------------------------------------------------------------------------------------- the page paths
def runs_page(url: str) -> pd.DataFrame:
    """What the Runs page computes: list_runs (runs + latest_metrics) -> filters -> table."""
    from dashboard import forms, plots

    return plots.runs_table(forms.filter_runs(queries.list_runs(url)))


def runs_page_naive(url: str) -> pd.DataFrame:
    """Baseline: load every metric row and aggregate latest/best per run in pandas."""
    from dashboard import forms, plots

    def fn(s):
        runs = pd.DataFrame(
            s.execute(
                select(
                    Run.id,
                    Run.name,
                    Run.status,
                    Run.dataset,
                    Run.model,
                    Run.tags,
                    Run.notes,
                    Run.epochs_done,
                    Run.epochs_planned,
                    Run.created_at,
                    Run.started_at,
                    Run.ended_at,
                )
            ).all(),
            columns=[
                "id",
                "name",
                "status",
                "dataset",
                "model",
                "tags",
                "notes",
                "epochs_done",
                "epochs_planned",
                "created_at",
                "started_at",
                "ended_at",
            ],
        )
        m = pd.DataFrame(
            s.execute(select(Metric.run_id, Metric.epoch, Metric.split, Metric.name, Metric.value)).all(),
            columns=["run_id", "epoch", "split", "name", "value"],
        )
        ev = pd.DataFrame(
            s.execute(select(Evaluation.run_id, Evaluation.accuracy).where(Evaluation.split == "test")).all(),
            columns=["run_id", "test_acc"],
        )
        return runs, m, ev

    runs, m, ev = read(url, fn)
    m = m.sort_values("epoch")
    last = m.groupby(["run_id", "split", "name"])["value"].last().unstack(["split", "name"])
    best_val_acc = m[(m["split"] == "val") & (m["name"] == "acc")].groupby("run_id")["value"].max()
    wide = pd.DataFrame(
        {
            "train_acc": last[("train", "acc")],
            "val_acc": last[("val", "acc")],
            "train_loss": last[("train", "loss")],
            "val_loss": last[("val", "loss")],
            "best_val_acc": best_val_acc,
        }
    )
    runs = runs.merge(wide, left_on="id", right_index=True, how="left").merge(
        ev.groupby("run_id").last(), left_on="id", right_index=True, how="left"
    )
    runs["duration_s"] = (pd.to_datetime(runs["ended_at"]) - pd.to_datetime(runs["started_at"])).dt.total_seconds()
    return plots.runs_table(forms.filter_runs(runs.sort_values("id", ascending=False)))


def _compare_figures(runs, history, latest, evals, val_cms, tta) -> list:
    from dashboard import plots_compare as pc

    labels = {r["id"]: pc.run_label(r["id"], r["name"]) for r in runs}
    mats = {labels[i]: e["confusion"] for i, e in evals.items()}
    a, b = list(mats)[:2]
    figs = [
        pc.curves_figure(history, "acc", labels, ("train", "val")),
        pc.curves_figure(history, "loss", labels, ("train", "val"), smoothing=0.6, log_y=True),
        pc.confusion_grid_figure(mats, []),
        pc.confusion_grid_figure({labels[i]: m for i, (_, m) in val_cms.items()}, []),
        pc.confusion_difference_figure(mats[a], mats[b], a, b, []),
        pc.per_class_figure({labels[i]: e["per_class"] for i, e in evals.items()}, [], "recall"),
        pc.tta_figure(tta, labels),
    ]
    tables = [
        pc.best_final_table(latest, labels),
        pc.config_diff({labels[r["id"]]: r["config"] for r in runs}),
        pc.tta_table(tta, labels),
    ]
    return [f.to_json() for f in figs] + tables  # to_json: what st.plotly_chart sends


def compare_page(url: str, ids: list[int]) -> list:
    """What the Compare page computes for `ids`: its db.queries reads and every figure and table."""
    runs = queries.runs_with_configs(url, ids)
    history = queries.metric_history(url, ids)
    latest = queries.latest_metrics(url, ids)
    evals = queries.final_evaluations(url, ids, "test")
    val_cms = {i: queries.latest_confusion(url, i, "val") for i in ids}
    tta = queries.tta_results(url, ids)
    return _compare_figures(runs, history, latest, evals, val_cms, tta)


def compare_page_naive(url: str, ids: list[int]) -> list:
    """Baseline: every metric row and every run loaded, filtered in pandas; evaluations and confusions as whole rows."""

    def fn(s):
        m = pd.DataFrame(
            s.execute(select(Metric.run_id, Metric.epoch, Metric.split, Metric.name, Metric.value)).all(),
            columns=["run_id", "epoch", "split", "name", "value"],
        )
        runs = {r.id: {"id": r.id, "name": r.name, "config": r.config} for r in s.scalars(select(Run))}
        return m, runs

    m, all_runs = read(url, fn)
    history = m[m["run_id"].isin(ids)].sort_values(["run_id", "epoch"])
    runs = [all_runs[i] for i in ids]
    last = history.sort_values("epoch").groupby(["run_id", "split", "name"])
    latest = last["value"].last().rename("value").to_frame().join(last["value"].max().rename("best_value"))
    latest = latest.reset_index().assign(epoch=0, best_epoch=0)
    evals = {i: [e for e in queries.evaluations(url, i) if e["split"] == "test"][-1] for i in ids}
    val_cms = {}
    for i in ids:
        cms = queries.confusion_matrices(url, i, "val")
        val_cms[i] = (max(cms), cms[max(cms)])
    tta = queries.tta_results(url, ids)
    return _compare_figures(runs, history, latest, evals, val_cms, tta)


def apptest_page(url: str, page: str, query: dict | None = None) -> float:
    """Seconds for one cold (st.cache_data cleared) run of a real page script under AppTest."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["LAB_DB_URL"] = url
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300).run()
    at.switch_page(f"views/{page}")
    for k, v in (query or {}).items():
        at.query_params[k] = v
    st.cache_data.clear()
    t0 = time.perf_counter()
    at.run()
    took = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].value}")
    return took


# ------------------------------------------------------------------------------------- timing
def timed(fn, *args, repeat: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds of `repeat` calls after one warm-up call, and the warm-up's result.

    CPU time (this process) is reported too: on a shared machine it moves far less than wall time.
    """
    out = fn(*args)  # warm-up: imports, SQLite page cache
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(*args)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def query_plans(url: str) -> list[str]:
    ids = ",".join(str(i) for i in range(1, 11))
    sqls = [
        f"SELECT run_id, split, name, value, best_value FROM latest_metrics WHERE run_id IN ({ids}) AND name IN ('acc','loss')",
        f"SELECT run_id, epoch, split, name, value FROM metrics WHERE run_id IN ({ids}) ORDER BY run_id, epoch",
        "SELECT epoch, matrix FROM confusion_matrices WHERE run_id = 5 AND split = 'val' ORDER BY epoch DESC LIMIT 1",
    ]
    out = []
    with get_engine(url).connect() as conn:
        for sql in sqls:
            plan = "; ".join(r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            out.append(f"{sql.split(' WHERE')[0][:60]}…  ->  {plan}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db", default="/tmp/bench_ui/lab.db")
    ap.add_argument("--no-apptest", action="store_true", help="skip the AppTest page runs")
    args = ap.parse_args(argv)

    path = Path(args.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    url = init_db(f"sqlite:///{path}")
    print(f"filling {path}: {args.runs} runs x {args.epochs} epochs x {len(METRICS)} metrics ...", flush=True)
    info = fill(url, args.runs, args.epochs)
    n_metrics = read(url, lambda s: s.scalar(select(func.count()).select_from(Metric)))
    print(
        f"  {n_metrics:,} metric rows, {info['confusion_rows']:,} confusion matrices, "
        f"{path.stat().st_size / 2**20:.0f} MiB, filled in {info['seconds']:.1f} s"
    )
    for line in query_plans(url):
        print("  plan:", line)

    ids = list(range(args.runs, args.runs - 10, -1))  # the 10 newest runs
    rows = []
    naive_repeat = min(args.repeat, 3)  # the baseline takes seconds a call
    t_runs, c_runs, table = timed(runs_page, url, repeat=args.repeat)
    t_runs_naive, c_runs_naive, table_naive = timed(runs_page_naive, url, repeat=naive_repeat)
    assert len(table) == len(table_naive) == args.runs
    assert np.allclose(table["best_val_acc"].to_numpy(), table_naive["best_val_acc"].to_numpy())
    rows.append(("Runs page: list_runs + filter + table", t_runs, c_runs, t_runs_naive, c_runs_naive))
    t_cmp, c_cmp, _ = timed(compare_page, url, ids, repeat=args.repeat)
    t_cmp_naive, c_cmp_naive, _ = timed(compare_page_naive, url, ids, repeat=naive_repeat)
    rows.append(("Compare page, 10 runs: reads + 7 figures + 3 tables", t_cmp, c_cmp, t_cmp_naive, c_cmp_naive))

    print(f"\n{'path':52s} {'ours wall / cpu':>18s} {'naive wall / cpu':>20s} {'naive/ours (wall)':>18s}")
    for name, ours, ours_cpu, naive, naive_cpu in rows:
        print(
            f"{name:52s} {ours * 1000:7.0f} / {ours_cpu * 1000:5.0f} ms {naive * 1000:8.0f} / {naive_cpu * 1000:6.0f} ms "
            f"{naive / ours:17.1f}x"
        )
    if not args.no_apptest:
        print("\nwhole page scripts under AppTest (cold st.cache_data, one run each):")
        for page, query in (("runs.py", None), ("compare.py", {"runs": ",".join(map(str, ids))})):
            print(f"  {page:12s} {apptest_page(url, page, query) * 1000:7.0f} ms")

    import sqlalchemy
    import streamlit

    print(
        f"\n{dt.date.today()} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores · "
        f"python {platform.python_version()} · sqlite {read(url, lambda s: s.scalar(text('select sqlite_version()')))} · "
        f"sqlalchemy {sqlalchemy.__version__} · pandas {pd.__version__} · plotly {plotly.__version__} · "
        f"streamlit {streamlit.__version__}"
    )
    print(
        f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(other work on the machine slows every row alike)"
    )
    print(f"Runs page target < 1 s: {'met' if t_runs < 1.0 else 'MISSED'} ({t_runs:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
