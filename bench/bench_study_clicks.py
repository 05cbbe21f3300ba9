"""A study designed, launched and read by clicking only, timed: the Studies page's acceptance flow.

Starts the real dashboard (`streamlit run dashboard/app.py`, headless, on a free port, against a fresh
SQLite file and runs folder in a temp dir) and drives a real Chromium through it (Playwright):

1. design by clicks: open /studies, pick "Past run" as the base (a finished tiny digits run, small_cnn,
   1 epoch x 3 steps, seeded through the DB before the server starts: it stands for the user's past run,
   and keeps each of the study's runs to seconds), factor 1 = optim.lr at "0.001, 0.01", factor 2 =
   optim.weight_decay at "0, 0.05", 3 seeds per configuration (the page's default);
2. preview: click Preview until it shows 4 configurations, 12 runs;
3. launch to all runs ended: click Launch study until the progress bar reads "12 of 12 runs ended";
4. results shown: until the configurations table, the parameter-importance chart and the
   "Is B better than A?" sentence are on the page (the sentence is printed).

Prints each phase's wall-clock seconds, their total, the server's start time, the load average at start
and end and the date; exits 1 if any step failed. A full-page screenshot of the end (or of the failure)
goes to the temp dir, whose path is printed; without --keep only that screenshot and streamlit.log stay
(the DB and the runs folder are removed). Every wait is on a condition, never a fixed sleep.

    .venv/bin/python bench/bench_study_clicks.py [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser_support import (  # noqa: E402  (the same server, browser and waits as the browser tests)
    CHROMIUM,
    CHROMIUM_ARGS,
    START_TIMEOUT_S,
    TIMEOUT_MS,
    healthy,
    no_exception,
    settled,
    start_dashboard,
    stop_dashboard,
)

RUNS_TIMEOUT_MS = 600_000  # all 12 runs of the study
RUNS = 12  # 2 factors x 2 levels x 3 seeds


def _seed_run(url: str) -> int:
    """A finished tiny digits run, as a user's past run the study starts from."""
    from control.launcher import bootstrap
    from db import store

    bootstrap(url)
    cfg = {
        "name": "bench-base",
        "data": {"dataset": "digits"},
        "model": {"source": "custom", "name": "small_cnn"},
        "optim": {"name": "adamw", "lr": 0.003},
        "schedule": {"name": "cosine"},
        "train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 64, "seed": 0},
        "eval": {"tta": ["none"]},
    }
    return store.create_run(url, cfg, name="bench-base", status="completed")


def _fill(page, box, text: str) -> None:
    from playwright.sync_api import expect

    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value(text)
    settled(page)


def _design(page, base: str) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/studies")
    expect(page.get_by_role("heading", name="Studies", exact=True)).to_be_visible()
    settled(page)
    page.get_by_text("Past run", exact=True).click()
    expect(page.get_by_role("combobox", name="Run", exact=True)).to_have_value(re.compile(r"^#1 bench-base"))
    settled(page)
    expect(page.get_by_role("spinbutton", name="How many factors")).to_have_value("2")
    expect(page.get_by_role("combobox", name="Factor 1: config field")).to_have_value("optim.lr")
    expect(page.get_by_role("combobox", name="Factor 2: config field")).to_have_value("optim.weight_decay")
    levels = page.get_by_role("textbox", name="Levels (comma-separated)")
    expect(levels).to_have_count(2)
    _fill(page, levels.nth(0), "0.001, 0.01")
    _fill(page, levels.nth(1), "0, 0.05")
    expect(page.get_by_role("spinbutton", name="Seeds per configuration")).to_have_value("3")
    no_exception(page)


def _preview(page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="Preview", exact=True).click()
    values = page.get_by_test_id("stMetricValue")
    expect(values.filter(has_text=re.compile(r"^4$")).first).to_be_visible()
    expect(values.filter(has_text=re.compile(rf"^{RUNS}$")).first).to_be_visible()
    settled(page)
    no_exception(page)


def _launch_and_wait(page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="Launch study", exact=True).click()
    expect(page.get_by_text(re.compile(r"runs ended"))).to_be_visible()
    expect(page.get_by_text(f"{RUNS} of {RUNS} runs ended", exact=False)).to_be_visible(timeout=RUNS_TIMEOUT_MS)


def _results(page) -> str:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Configurations, seeds pooled")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(page.get_by_role("heading", name="Which factor matters")).to_be_visible()
    charts = page.get_by_test_id("stPlotlyChart")
    expect(charts.filter(has_text="Parameter importance (fANOVA)")).to_be_visible()
    expect(page.get_by_role("heading", name="Is B better than A?")).to_be_visible()
    sentence = page.get_by_test_id("stAlert").filter(has_text=re.compile(r"over 3 seeds each"))
    expect(sentence).to_have_count(1)
    expect(sentence).to_be_visible()
    settled(page)
    no_exception(page)
    return sentence.inner_text().strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the temp dir's DB and runs folder")
    args = ap.parse_args()

    from playwright.sync_api import expect, sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} is missing: run scripts/install_system_deps.sh", file=sys.stderr)
        return 1
    load_start = os.getloadavg()
    started_at = dt.datetime.now().astimezone()
    tmp = Path(tempfile.mkdtemp(prefix="bench_study_clicks_"))
    url = f"sqlite:///{tmp / 'lab.db'}"
    os.environ["LAB_DB_URL"], os.environ["LAB_RUNS_DIR"] = url, str(tmp / "runs")
    shot = tmp / "study_clicks_end.png"
    times: dict[str, float] = {}
    sentence = None
    failed = None
    server_s = float("nan")

    _seed_run(url)
    t = time.monotonic()
    proc, base, log = start_dashboard(tmp, url)
    try:
        if not healthy(base, proc, START_TIMEOUT_S):
            raise RuntimeError("streamlit did not start:\n" + (tmp / "streamlit.log").read_text()[-3000:])
        server_s = time.monotonic() - t
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # tall: Streamlit scrolls its own container, so a full-page shot is only the viewport
            page = browser.new_page(viewport={"width": 1400, "height": 4400})
            page.set_default_timeout(TIMEOUT_MS)
            page.set_default_navigation_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            try:
                for phase, step in (
                    ("design by clicks", lambda: _design(page, base)),
                    ("preview", lambda: _preview(page)),
                    ("launch to all runs ended", lambda: _launch_and_wait(page)),
                    ("results shown", lambda: _results(page)),
                ):
                    t = time.monotonic()
                    out = step()
                    times[phase] = time.monotonic() - t
                    print(f"[{sum(times.values()):7.1f} s] {phase}: {times[phase]:.1f} s", flush=True)
                    if phase == "results shown":
                        sentence = out
                if page_errors:
                    raise AssertionError(f"errors in the page's JavaScript: {page_errors}")
            except Exception:
                failed = traceback.format_exc()
            finally:
                try:
                    page.screenshot(path=str(shot), full_page=True)
                except Exception as exc:
                    print(f"no screenshot: {exc}", file=sys.stderr)
                browser.close()
        if failed is None:
            from db import queries

            [study] = queries.list_studies(url)
            runs = queries.study_runs(url, study["id"])
            statuses = sorted({r["status"] for r in runs})
            if len(runs) != RUNS or statuses != ["completed"]:
                failed = f"the study has {len(runs)} runs with statuses {statuses}, not {RUNS} completed"
    except Exception:
        failed = traceback.format_exc()
    finally:
        stop_dashboard(proc, url, log)

    load_end = os.getloadavg()
    print()
    print(
        f"Study by clicking: 2 factors x 2 levels x 3 seeds on the digits ({RUNS} runs), {started_at:%Y-%m-%d %H:%M %Z}"
    )
    print(f"{'phase':<28}{'seconds':>10}")
    for phase, s in times.items():
        print(f"{phase:<28}{s:>10.1f}")
    print(f"{'total':<28}{sum(times.values()):>10.1f}")
    print(f"(server start to healthy: {server_s:.1f} s, not in the total)")
    print("load average (1, 5, 15 min): start " + " ".join(f"{x:.2f}" for x in load_start), end="")
    print(", end " + " ".join(f"{x:.2f}" for x in load_end) + f"; {os.cpu_count()} CPUs")
    print(f"significance sentence: {sentence}")
    print(f"screenshot: {shot}")
    if not args.keep:
        shutil.rmtree(tmp / "runs", ignore_errors=True)
        for f in tmp.glob("lab.db*"):
            f.unlink()
    print(f"temp dir: {tmp}" + ("" if args.keep else " (DB and runs removed; --keep keeps them)"))
    if failed:
        print(f"\nFAILED:\n{failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
