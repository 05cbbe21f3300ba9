"""In a real browser (the Playwright setup of tests/test_e2e_browser.py): the builder's LR finder runs an LR
range test, "Use this LR" fills the optimizer's LR field, and the run launched from it trains with the
suggested LR and records the LR range test in its facts."""

from __future__ import annotations

import re

import pytest

from tests import test_e2e_browser as e2e
from tests.test_e2e_browser import chromium, dashboard  # noqa: F401  (its fixtures: Chromium, `streamlit run`)

pytestmark = pytest.mark.browser


def _spin(page, label: str, value) -> None:
    from playwright.sync_api import expect

    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def test_find_lr_use_it_and_launch_in_a_real_browser(chromium, dashboard):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    from db import queries

    base, url = dashboard
    e2e.ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=e2e.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        e2e._patient(page)
        try:
            page.goto(base + "/")
            expect(page.get_by_text("No runs yet")).to_be_visible()
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="New run").click()
            expect(page.get_by_role("tab", name="Training")).to_be_visible()
            page.get_by_role("tab", name="Training").click()
            _spin(page, "Epochs", 1)
            steps = page.get_by_role("spinbutton", name="Cap steps per epoch")
            if not steps.is_visible():
                page.get_by_role("tabpanel", name="Training").get_by_text("Advanced").click()
            _spin(page, "Cap steps per epoch", 3)  # a few steps per epoch: the sweep and the run end in seconds

            page.get_by_role("tab", name="Optimizer").click()
            _spin(page, "Sweep steps", 20)
            e2e._settled(page)
            page.get_by_role("button", name="Find learning rate").click()
            suggestion = page.get_by_text(re.compile(r"Suggested LR \S+ by the \w+ rule"))
            expect(suggestion).to_be_visible(timeout=e2e.TIMEOUT_MS)
            chart = page.get_by_test_id("stPlotlyChart").filter(has_text="LR range test")
            expect(chart.get_by_text(re.compile(r"suggested \S+ \((valley|steepest)\)"))).to_be_visible()
            e2e._no_exception(page)
            page.screenshot(path=str(e2e.ARTIFACTS / "e2e_lr_find_1_result.png"), full_page=True)

            e2e._settled(page)
            page.get_by_role("button", name="Use this LR", exact=True).click()
            expect(page.get_by_role("button", name="✔ In use")).to_be_visible()
            e2e._settled(page)
            page.get_by_role("button", name="Launch").click()
            expect(page.get_by_role("heading", name=re.compile(r"^Run #1"))).to_be_visible()
            expect(page.get_by_text(re.compile(r"suggested by LR range test #1"))).to_be_visible()
            e2e._no_exception(page)
            page.screenshot(path=str(e2e.ARTIFACTS / "e2e_lr_find_2_launched.png"), full_page=True)
        finally:
            browser.close()

    found = queries.get_lr_find(url, 1)
    assert found["status"] == "completed" and found["suggested_lr"] is not None
    run = queries.get_run(url, 1)
    assert run["config"]["optim"]["lr"] == found["suggested_lr"]
    assert queries.run_facts(url, 1)["lr_find"] == {
        "id": 1,
        "suggested_lr": found["suggested_lr"],
        "rule": found["rule"],
    }
