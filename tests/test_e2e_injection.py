"""Markdown and link payloads in user text, in a real browser: run names, tags, notes, error texts and
dataset names are shown as the characters typed; no request leaves for an injected URL and no
injected link exists (Run detail, Compare, Datasets)."""

from __future__ import annotations

import re

import pytest

from dashboard.text import WORD_JOINER
from tests.conftest import tiny_config
from tests.test_e2e_browser import CHROMIUM_ARGS, TIMEOUT_MS, _no_exception, chromium, dashboard  # noqa: F401

pytestmark = pytest.mark.browser

HOST = "injected.invalid"  # never resolves: a request for it can only come from the payload
IMAGE = f"![t](http://{HOST}/notes.png)"
LINK = f"[x](http://{HOST}/name)"
BARE = f"http://{HOST}/bare www.{HOST} :red[loud]"


def _seed(url: str) -> None:
    from control.launcher import bootstrap
    from db import store
    from db.models import RunStatus

    bootstrap(url)
    for i in (1, 2):
        run_id = store.create_run(
            url,
            tiny_config(),
            name=f"{LINK} {i}",
            tags=[f"![tag](http://{HOST}/tag.png)"],
            notes=f"{IMAGE}\n{BARE}",
            status=RunStatus.FAILED,
        )
        store.update_run(url, run_id, error=f"Boom: see {LINK} ![e](http://{HOST}/error.png)")
    store.upsert_dataset(url, f"ds {LINK}", "digits", "", {})


def test_user_text_is_never_markdown_in_a_real_browser(chromium, dashboard):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    base, url = dashboard
    _seed(url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        try:
            page.goto(base + "/run?run=1")
            expect(page.get_by_role("heading", name=re.compile(r"^Run #1 · "))).to_be_visible(timeout=TIMEOUT_MS)
            # the page streams in: wait for the notes and the error line before reading the text
            expect(page.get_by_text(re.compile("notes.png")).first).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_text(re.compile("Boom: see")).first).to_be_visible(timeout=TIMEOUT_MS)
            shown = page.inner_text("body").replace(WORD_JOINER, "")
            for typed in (
                f"Run #1 · {LINK} 1",
                IMAGE,
                BARE,
                f"Boom: see {LINK}",
                f"tags: ![tag](http://{HOST}/tag.png)",
            ):
                assert typed in shown, typed  # the characters typed, not what markdown makes of them
            _no_exception(page)
            seen = [page.content()]

            page.goto(base + "/compare?runs=1&runs=2")
            expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=TIMEOUT_MS)
            page.wait_for_load_state("networkidle")
            _no_exception(page)
            seen.append(page.content())

            page.goto(base + "/datasets")
            expect(page.get_by_role("heading", name="Datasets")).to_be_visible(timeout=TIMEOUT_MS)
            page.get_by_role("combobox", name="Dataset").click()
            page.get_by_role("option", name=f"ds {LINK}").click()
            expect(page.get_by_text("Samples per class")).to_be_visible(timeout=TIMEOUT_MS)
            page.wait_for_load_state("networkidle")
            _no_exception(page)
            seen.append(page.content())

            assert page.locator(f"a[href*='{HOST}']").count() == 0
            assert page.locator(f"img[src*='{HOST}']").count() == 0
        finally:
            browser.close()
    assert not [r for r in requests if HOST in r], requests
    for page_name, html in zip(("run detail", "compare", "datasets"), seen):
        for attr in ("href", "src"):
            at = html.find(f'{attr}="http://{HOST}')
            assert at < 0, (page_name, html[max(0, at - 400) : at + 100])
