"""Dashboard interactions, server-side: a fixed script of clicks under AppTest against a no-op page.

    .venv/bin/python bench/bench_pages.py [--runs 3] [--repeat 5] [--json out.json]

A fresh lab (real migrated SQLite file) gets `--runs` runs trained by the real engine on the digits (2
epochs, TTA none + hflip). Then the real app (dashboard/app.py and its st.navigation) is driven through:
  builder widget   New run: change the optimizer (adamw <-> sgd) in the open Optimizer tab
  builder tab      New run: open another section's tab and back (what the tabs' on_change does)
  runs click       Runs: tick a row of the runs table (its selection, then the rerun)
  run detail       open Run detail of a run, fresh (st.cache_data cleared) and again (cached)
  compare          open Compare for all runs, fresh and again
(the fresh opens come after every builder and table click: clearing st.cache_data clears the builder's
caches too, which a user opening a new tab on a running server never does)
Each interaction is one AppTest rerun, timed with perf_counter around it: server-side script time plus
AppTest's own overhead, which the same rerun of a no-op page (`st.write`) measures. Median and worst
of --repeat; targets: every interaction < 300 ms, a fresh Run detail or Compare < 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

APP = ROOT / "dashboard" / "app.py"
K = "cfg:"


def make_lab(root: Path, n_runs: int) -> tuple[str, list[int]]:
    os.environ["LAB_RUNS_DIR"] = str(root / "runs")
    url = f"sqlite:///{root / 'lab.db'}"
    os.environ["LAB_DB_URL"] = url
    from control.launcher import bootstrap, run_dir_for
    from control.preflight import resolve_dataset
    from db import store
    from db.sink import DBSink
    from engine.config import parse_config
    from engine.training.loop import train

    bootstrap(url)
    ids = []
    for i in range(n_runs):
        raw = {
            "name": f"bench {i}",
            "data": {"dataset": "digits"},
            "model": {"source": "custom", "name": "small_cnn"},
            "augment": {"train": [{"name": "HorizontalFlip", "p": 0.5}]},
            "optim": {"name": "adamw", "lr": 0.003 * (i + 1)},
            "schedule": {"name": "cosine"},
            "train": {"epochs": 2, "batch_size": 64, "seed": i},
            "eval": {"tta": ["none", "hflip"]},
        }
        cfg = parse_config(raw)
        run_id = store.create_run(url, cfg.model_dump(mode="json"), name=raw["name"])
        run_dir = run_dir_for(url, run_id)
        store.update_run(url, run_id, run_dir=str(run_dir))
        result = train(cfg, resolve_dataset(url, "digits"), run_dir, DBSink(url, run_id))
        assert result.status == "completed", result
        ids.append(run_id)
    return url, ids


def timed_run(at) -> float:
    t = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t
    if at.exception:
        raise SystemExit(f"page raised: {[e.message for e in at.exception]}")
    return elapsed


def app_at(page: str | None = None, **query):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py")
        for k, v in query.items():
            at.query_params[k] = str(v)
        at.run()
    return at


def bench(url: str, ids: list[int], repeat: int) -> dict[str, list[float]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    times: dict[str, list[float]] = {}

    def add(name, seconds):
        times.setdefault(name, []).append(seconds)

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write("import streamlit as st\nst.write('no-op')\n")
    noop = AppTest.from_file(f.name, default_timeout=60)
    noop.run()
    builder = app_at("new_run")
    builder.session_state["builder_section"] = "optim"  # the builder draws only the open tab's widgets
    builder.run()
    runs = app_at("runs")
    for i in range(repeat):
        add("no-op page rerun", timed_run(noop))
        builder.selectbox(key=K + "optim.name").set_value("sgd" if i % 2 == 0 else "adamw")
        add("builder: change a widget", timed_run(builder))
        for section in ("data", "optim"):  # away and back, so the next change finds its widget
            builder.session_state["builder_section"] = section
            add("builder: switch tab", timed_run(builder))
        runs.session_state["runs_table"] = {"selection": {"rows": [i % len(ids)], "columns": []}}
        add("runs: click a row", timed_run(runs))
    # The fresh opens clear every st.cache_data, the builder's too: timed after the builder and table
    # clicks, so that those are measured with their caches as a running server keeps them.
    from dashboard import reads

    for i in range(repeat):
        st.cache_data.clear()
        reads.learning_curves.clear()  # a figure shared in st.cache_resource: fresh means built again
        detail = app_at()
        detail.switch_page("views/run_detail.py")
        detail.query_params["run"] = str(ids[i % len(ids)])
        add("run detail: open, fresh", timed_run(detail))
        add("run detail: rerun, cached", timed_run(detail))
        st.cache_data.clear()
        compare = app_at()
        compare.switch_page("views/compare.py")
        compare.query_params["runs"] = ",".join(map(str, ids))
        add("compare: open, fresh", timed_run(compare))
        add("compare: rerun, cached", timed_run(compare))
    os.unlink(f.name)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        t = time.perf_counter()
        url, ids = make_lab(Path(tmp), a.runs)
        print(f"lab with {len(ids)} finished runs in {time.perf_counter() - t:.0f} s; load {os.getloadavg()[0]:.1f}")
        times = bench(url, ids, a.repeat)
    floor = statistics.median(times["no-op page rerun"])
    print(f"\n| interaction | median | worst | median − no-op rerun | target | (load {os.getloadavg()[0]:.1f})")
    print("|---|---|---|---|---|")
    for name, vals in times.items():
        target = 1.5 if "fresh" in name else 0.3
        med, worst = statistics.median(vals), max(vals)
        met = (
            "" if name.startswith("no-op") else (f"< {target * 1000:.0f} ms " + ("met" if worst < target else "missed"))
        )
        print(f"| {name} | {med * 1000:.0f} ms | {worst * 1000:.0f} ms | {(med - floor) * 1000:.0f} ms | {met} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"load_avg": os.getloadavg(), "seconds": times}, indent=1))


if __name__ == "__main__":
    main()
