"""End to end in a real browser: Debian's Chromium, driven by Playwright, against `streamlit run`.

Builds a run with the form, launches it, watches its curves appear live on the run page, launches a
second one, selects both in the Runs table and opens Compare. Screenshots go to artifacts/e2e_*.png.
Runs against its own SQLite file and runs folder; every engine process it starts is a real one.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.browser_support import (  # noqa: F401  (CHROMIUM_ARGS, TIMEOUT_MS: the other browser tests import them from here)
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    TIMEOUT_MS,
    click_until_taken,
    healthy,
    no_exception,
    settled,
    start_dashboard,
    stop_dashboard,
)

ARTIFACTS = ROOT / "artifacts"
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    # installs Chromium (and an emoji font for readable screenshots) when missing; instant otherwise
    subprocess.run(["bash", str(ROOT / "scripts" / "install_system_deps.sh")], check=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            "Chromium is not installed and cannot be installed here (scripts/install_system_deps.sh needs root)"
        )
    return CHROMIUM


@pytest.fixture
def dashboard(tmp_path):
    """`streamlit run dashboard/app.py` on a free port with its own DB; yields (base URL, DB URL)."""
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    # two runs at once: the second one's process starts while the first trains
    proc, base, log = start_dashboard(tmp_path, url, LAB_MAX_CONCURRENT="2")
    try:
        if not healthy(base, proc):
            raise RuntimeError("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text()[-3000:])
        yield base, url
    finally:
        stop_dashboard(proc, url, log)


def _patient(page) -> None:
    """Every action and assertion waits on its condition for TIMEOUT_MS, not Playwright's 5-30 s defaults:
    on a shared machine a first page load or a rerun can take far longer, and only a condition says done."""
    from playwright.sync_api import expect

    page.set_default_timeout(TIMEOUT_MS)
    page.set_default_navigation_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)


_settled = settled  # the other browser tests import these names from here
_no_exception = no_exception


def _build_and_launch(page, url: str, run_id: int, name: str, seed: int, epochs: int = 2):
    from playwright.sync_api import expect

    from db import queries

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="New run").click()
    expect(page.get_by_role("tab", name="Training")).to_be_visible(timeout=TIMEOUT_MS)
    name_box = page.get_by_role("textbox", name="Run name", exact=True)
    expect(name_box).to_be_editable(timeout=TIMEOUT_MS)
    name_box.fill(name)
    name_box.press("Enter")
    page.get_by_role("tab", name="Training").click()
    for label, value in (("Epochs", epochs), ("Seed", seed)):
        box = page.get_by_role("spinbutton", name=label, exact=True)
        box.fill(str(value))
        box.press("Enter")
        expect(box).to_have_value(str(value))
    panel = page.get_by_role("tabpanel", name="Training")
    steps = page.get_by_role("spinbutton", name="Cap steps per epoch")
    if not steps.is_visible():
        panel.get_by_text("Advanced").click()
    steps.fill("3")  # a few steps per epoch: a real run that ends in seconds
    steps.press("Enter")
    expect(steps).to_have_value("3")
    # the server has read every value: its summary of the config says so (the inputs alone are the browser's)
    summary = page.get_by_text(re.compile(rf"{epochs} epochs × batch .* max_steps_per_epoch 3"))
    expect(summary).to_be_visible(timeout=TIMEOUT_MS)
    _settled(page)
    _no_exception(page)
    click_until_taken(
        page,
        page.get_by_role("button", name="Launch"),
        lambda: queries.get_run(url, run_id) is not None or page.get_by_text("Fix these before launching").count() > 0,
        f"Launch of run #{run_id}",
    )


def _wait_for_curves(page, run_id: int, name: str, shot: Path):
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name=f"Run #{run_id} · {name}")).to_be_visible(timeout=TIMEOUT_MS)
    assert re.search(rf"/run\?run={run_id}$", page.url), page.url
    # the curves appear without reloading the page (st.fragment polling the DB)
    curves = page.get_by_test_id("stPlotlyChart").first
    expect(curves.get_by_text("Accuracy")).to_be_visible(timeout=TIMEOUT_MS)
    expect(curves.get_by_text("Learning rate")).to_be_visible()
    _no_exception(page)
    page.screenshot(path=str(shot), full_page=True)


def _wait_for_completion(page, shot: Path):
    from playwright.sync_api import expect

    expect(page.get_by_text(re.compile(r"completed · dataset digits"))).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"running — \d+ of \d+ epochs done"))).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.get_by_role("tab", name="Test errors & gallery")).to_be_visible()
    _no_exception(page)
    page.screenshot(path=str(shot), full_page=True)


def _click_a_confusion_cell(page, url: str, run_id: int):
    """Clicking a cell of the test confusion matrix (plotly selection, browser only) fills the gallery
    with exactly the images of that (true, predicted) pair."""
    import numpy as np
    from playwright.sync_api import expect

    from db import queries

    test = next(e for e in queries.evaluations(url, run_id) if e["split"] == "test")
    m = np.array(test["confusion"])
    true_c, pred_c = np.unravel_index(np.argmax(m), m.shape)
    count = int(m[true_c, pred_c])
    page.get_by_role("tab", name="Test errors & gallery").click()
    panel = page.get_by_role("tabpanel", name="Test errors & gallery")
    chart = panel.get_by_test_id("stPlotlyChart").filter(has_text="Test confusion")
    expect(chart).to_be_visible(timeout=TIMEOUT_MS)
    chart.locator("g.scatterlayer path.point").nth(int(true_c) * m.shape[0] + int(pred_c)).click(force=True)
    expect(panel.get_by_text(f"{min(count, 48)} image(s) shown")).to_be_visible(timeout=TIMEOUT_MS)
    gallery = panel.get_by_test_id("stImage")
    expect(gallery.first).to_be_visible()
    captions = panel.get_by_test_id("stImageCaption").all_inner_texts()[: min(count, 48)]
    assert captions and all(f"true {true_c} → {pred_c}" in c for c in captions), captions[:3]
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "e2e_6_gallery.png"), full_page=True)


def test_build_launch_watch_and_compare_in_a_real_browser(chromium, dashboard):
    from playwright.sync_api import expect, sync_playwright

    from db import queries

    base, url = dashboard
    ARTIFACTS.mkdir(exist_ok=True)
    t0 = time.monotonic()

    def phase(what):  # progress for whoever reads the captured output of a failure; never asserted
        print(f"[e2e {time.monotonic() - t0:6.1f} s] {what}", flush=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        _patient(page)
        page_errors = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        try:
            page.goto(base + "/")
            expect(page.get_by_text("No runs yet")).to_be_visible(timeout=TIMEOUT_MS)
            _no_exception(page)
            phase("empty Runs page")

            # 1. build a run with the form and launch it; its page shows the curves as epochs finish
            _build_and_launch(page, url, 1, "e2e-first", seed=0)
            page.screenshot(path=str(ARTIFACTS / "e2e_1_run_launching.png"), full_page=True)
            _wait_for_curves(page, 1, "e2e-first", ARTIFACTS / "e2e_2_run_live.png")
            phase("run 1 shows curves")

            # 2. a second run while the first trains: the builder kept its settings; change name and seed
            _build_and_launch(page, url, 2, "e2e-second", seed=1)
            _wait_for_curves(page, 2, "e2e-second", ARTIFACTS / "e2e_3_second_live.png")
            _wait_for_completion(page, ARTIFACTS / "e2e_4_second_done.png")
            phase("run 2 completed on its page")
            second = queries.get_run(url, 2)
            assert second["status"] == "completed" and second["epochs_done"] == 2
            assert second["config"]["train"]["seed"] == 1 and second["config"]["train"]["epochs"] == 2

            # 3. back to the first run: finished, and a click on a confusion cell opens its images
            page.get_by_role("combobox", name="Run").click()
            page.get_by_role("option", name=re.compile(r"^#1 · e2e-first")).click()
            expect(page.get_by_role("heading", name="Run #1 · e2e-first")).to_be_visible(timeout=TIMEOUT_MS)
            _wait_for_completion(page, ARTIFACTS / "e2e_5_run_done.png")
            first = queries.get_run(url, 1)
            assert first["status"] == "completed" and first["epochs_done"] == 2
            assert first["config"]["train"]["max_steps_per_epoch"] == 3 and first["name"] == "e2e-first"
            _click_a_confusion_cell(page, url, 1)
            phase("gallery of a clicked confusion cell")

            # 3. tick both runs in the Runs table and compare them
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Runs").click()
            expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
            grid = page.locator(".st-key-runs_table")  # the keyed table (not a stale one of the previous page)
            expect(grid).to_be_visible(timeout=TIMEOUT_MS)
            expect(grid.get_by_test_id("stDataFrame")).to_have_count(1)
            expect(page.get_by_role("button", name=re.compile(r"Compare \(0\)"))).to_be_disabled()
            box = grid.bounding_box()
            for row in (0, 1):  # the selection checkboxes: first column, 35 px rows under a 35 px header
                page.mouse.click(box["x"] + 18, box["y"] + 35 * (row + 1) + 17)
            compare = page.get_by_role("button", name=re.compile(r"Compare \(2\)"))
            expect(compare).to_be_enabled(timeout=30_000)
            _no_exception(page)
            page.screenshot(path=str(ARTIFACTS / "e2e_7_runs.png"), full_page=True)
            phase("both runs selected")
            compare.click()
            page.wait_for_url(re.compile(r"/compare\?runs=2(,|%2C)1$"), timeout=TIMEOUT_MS)
            expect(page.get_by_role("heading", name=re.compile("Compare"))).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_text("#1 e2e-first").first).to_be_visible(timeout=TIMEOUT_MS)  # both runs are on it
            expect(page.get_by_text("#2 e2e-second").first).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=TIMEOUT_MS)
            time.sleep(1)  # let the charts finish drawing for the screenshot
            _no_exception(page)
            page.screenshot(path=str(ARTIFACTS / "e2e_8_compare.png"), full_page=True)
            phase("compare page")
            assert page_errors == []
        finally:
            page.screenshot(path=str(ARTIFACTS / "e2e_last.png"), full_page=True)
            browser.close()
