"""End to end in a real browser: design a small study on the Studies page by clicking (start from a
past run, one factor with two levels, two seeds), preview it, launch it, watch it fill, and read
the significance panel. Same browser, server and helpers as tests/test_e2e_browser.py."""

from __future__ import annotations

import re
import time

import pytest

from tests.test_e2e_browser import (  # noqa: F401  (chromium, dashboard: fixtures)
    ARTIFACTS,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    _no_exception,
    _patient,
    _settled,
    chromium,
    dashboard,
)

pytestmark = pytest.mark.browser


def _seed_run(url: str) -> int:
    """A finished tiny run to start the study from (as a user picks a past run)."""
    from control.launcher import bootstrap
    from db import store
    from tests.conftest import tiny_config

    bootstrap(url)
    cfg = tiny_config(**{"train.epochs": 1, "train.max_steps_per_epoch": 3})
    return store.create_run(url, cfg, name="e2e-base", status="completed")


def test_design_launch_watch_and_read_a_study_in_a_real_browser(chromium, dashboard):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    from db import queries

    base, url = dashboard
    _seed_run(url)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        _patient(page)
        page_errors = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        try:
            page.goto(base + "/studies")
            expect(page.get_by_role("heading", name="Studies", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
            page.get_by_text("Past run", exact=True).click()
            run_box = page.get_by_role("combobox", name="Run", exact=True)
            expect(run_box).to_have_value(re.compile(r"^#1 e2e-base"), timeout=TIMEOUT_MS)
            n = page.get_by_role("spinbutton", name="How many factors")
            n.fill("1")
            n.press("Enter")
            expect(page.get_by_text("Factor 2: config field")).to_have_count(0, timeout=TIMEOUT_MS)
            levels = page.get_by_role("textbox", name="Levels (comma-separated)")
            levels.fill("0.003, 0.03")
            levels.press("Enter")
            seeds = page.get_by_role("spinbutton", name="Seeds per configuration")
            seeds.fill("2")
            seeds.press("Enter")
            expect(seeds).to_have_value("2")
            _settled(page)  # the rerun of the last edit has replaced every element it redraws
            page.get_by_role("button", name="Preview", exact=True).click()
            expect(page.get_by_test_id("stMetricValue").filter(has_text=re.compile(r"^4$")).first).to_be_visible(
                timeout=TIMEOUT_MS
            )
            assert queries.list_studies(url) == []
            _no_exception(page)
            page.screenshot(path=str(ARTIFACTS / "e2e_study_1_preview.png"), full_page=True)

            _settled(page)
            page.get_by_role("button", name="Launch study", exact=True).click()
            expect(page.get_by_text(re.compile(r"runs ended"))).to_be_visible(timeout=TIMEOUT_MS)
            [study] = queries.list_studies(url)
            assert len(queries.study_runs(url, study["id"])) == 4
            # it fills without a reload: the fragment polls, the page reruns when a trial ends
            expect(page.get_by_text("4 of 4 runs ended", exact=False)).to_be_visible(timeout=4 * TIMEOUT_MS)
            expect(page.get_by_role("heading", name="Configurations, seeds pooled")).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_role("heading", name="Is B better than A?")).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_text(re.compile(r"over 2 seeds each")).first).to_be_visible(timeout=TIMEOUT_MS)
            time.sleep(1)  # let the charts finish drawing for the screenshot
            _no_exception(page)
            page.screenshot(path=str(ARTIFACTS / "e2e_study_2_results.png"), full_page=True)
            assert all(r["status"] == "completed" for r in queries.study_runs(url, study["id"]))
            assert page_errors == []
        finally:
            page.screenshot(path=str(ARTIFACTS / "e2e_study_last.png"), full_page=True)
            browser.close()
