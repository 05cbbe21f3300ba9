"""Markdown and link payloads in user text, in a real browser: run names, tags, notes, error texts,
dataset and class names and what a user types into the builder and the study designer are shown as the
characters typed; no request leaves for an injected URL and no injected link or image exists (Run
detail, Compare, Datasets, New run, Augmentations, Studies)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dashboard.text import WORD_JOINER
from tests.conftest import tiny_config
from tests.test_e2e_browser import (  # noqa: F401
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    _no_exception,
    _patient,
    _settled,
    chromium,
    dashboard,
)

pytestmark = pytest.mark.browser

HOST = "injected.invalid"  # never resolves: a request for it can only come from the payload
IMAGE = f"![t](http://{HOST}/notes.png)"
LINK = f"[x](http://{HOST}/name)"
BARE = f"http://{HOST}/bare www.{HOST} :red[loud]"
CLASSES = [f"cls ![c](http://{HOST}/class.png)", f"dog [d](http://{HOST}/class)"]  # every image's class is one
TYPED_MEAN = f"![m](http://{HOST}/mean.png) 1"  # typed into a builder field: its error quotes the part
MEAN_PART = f"'![m](http://{HOST}/mean.png)' is not a number"
TYPED_LEVELS = f"![s](http://{HOST}/study.png)"  # typed as a study factor's levels
CLS_DS, BAD_DS = f"cls {LINK}", f"bad {LINK}"


def _seed_datasets(url: str, folder) -> None:
    """A real .npz dataset whose class names are payloads, one whose file is gone, and a run on the first
    (New run clones it: its name and dataset name come into the builder)."""
    from sklearn.datasets import load_digits

    from control.dataset_registry import register_dataset
    from db import store
    from db.models import RunStatus

    digits = load_digits()
    keep = digits.target < 2
    x, y = (digits.images[keep] * (255 / 16)).astype(np.uint8), digits.target[keep]
    np.savez(folder / "cls.npz", x_train=x, y_train=y, class_names=np.array(CLASSES))
    register_dataset(url, CLS_DS, "npz", str(folder / "cls.npz"))
    store.upsert_dataset(url, BAD_DS, "npz", str(folder / "missing.npz"), {})
    config = tiny_config(
        **{"name": f"clone {LINK}", "data.dataset": CLS_DS, "data.normalize": "custom", "data.mean": [0.5]}
    )
    config["data"]["std"] = [0.3]
    store.create_run(url, config, status=RunStatus.FAILED)  # run #3


def _shown(page) -> str:
    return page.inner_text("body").replace(WORD_JOINER, "")


def _checked(page, seen: list) -> None:
    """The page raised nothing and holds no injected link or image; its HTML joins `seen`."""
    _no_exception(page)
    _no_injected_element(page)
    seen.append(page.content())


def _no_injected_element(page) -> None:
    assert page.locator(f"a[href*='{HOST}']").count() == 0, page.locator(f"a[href*='{HOST}']").first.inner_html()
    assert page.locator(f"img[src*='{HOST}']").count() == 0


def _goto(page, url: str) -> None:
    """Leave a page only once its script has finished. Streamlit parses a page's source (ast.parse) when a
    session first opens it, and Python 3.11.7 keeps the AST constructor's recursion counter per interpreter,
    not per thread: a parse while another session's thread parses too can fail the new page with
    "SystemError: AST constructor recursion depth mismatch"."""
    if page.url.startswith("http"):
        _settled(page)
    page.goto(url)


def _pick(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    _settled(page)


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


@pytest.mark.attack("markup payloads")
def test_user_text_is_never_markdown_in_a_real_browser(chromium, dashboard, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    base, url = dashboard
    _seed(url)
    _seed_datasets(url, tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        _patient(page)
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        try:
            _goto(page, base + "/run?run=1")
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

            _goto(page, base + "/compare?runs=1&runs=2")
            expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=TIMEOUT_MS)
            page.wait_for_load_state("networkidle")
            _no_exception(page)
            seen.append(page.content())

            _goto(page, base + "/datasets")
            expect(page.get_by_role("heading", name="Datasets")).to_be_visible(timeout=TIMEOUT_MS)
            page.get_by_role("combobox", name="Dataset").click()
            page.get_by_role("option", name=f"ds {LINK}").click()
            expect(page.get_by_text("Samples per class")).to_be_visible(timeout=TIMEOUT_MS)
            page.wait_for_load_state("networkidle")
            _no_exception(page)
            seen.append(page.content())

            _no_injected_element(page)

            # New run, cloned from run #3: its dataset name is in the summary line; a payload typed into a
            # field comes back in that field's error and in "Fix these before launching"
            _goto(page, base + "/new_run?clone=3")
            expect(page.get_by_role("heading", name="New run")).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_role("textbox", name="Run name", exact=True)).to_have_value(f"clone {LINK}")
            _settled(page)
            panel = page.get_by_role("tabpanel", name="Data")
            mean = page.get_by_role("textbox", name="Normalisation mean (per channel)")
            if not mean.is_visible():
                panel.get_by_text("Advanced").click()
            mean.fill(TYPED_MEAN)
            mean.press("Enter")
            expect(page.get_by_text("Fix these before launching")).to_be_visible(timeout=TIMEOUT_MS)
            _settled(page)
            shown = _shown(page)
            assert f"This run: {CLS_DS}" in shown
            at = shown.find("is not a number")
            assert MEAN_PART in shown, shown[max(0, at - 300) : at + 300]  # next to the field
            assert f"Data › Normalisation mean (per channel): {MEAN_PART}" in shown  # in the summary
            _checked(page, seen)
            page.get_by_role("tab", name=re.compile("^Augmentation")).click()
            expect(page.get_by_text(re.compile(r"^original · (cls|dog) ")).first).to_be_visible(timeout=TIMEOUT_MS)
            _settled(page)
            assert any(f"original · {c}" in _shown(page) for c in CLASSES)  # the preview's class names
            _checked(page, seen)

            # Augmentations: a dataset that cannot load says so by its name; class names caption the images
            _goto(page, base + "/augmentations")
            expect(page.get_by_role("heading", name="Augmentation browser")).to_be_visible(timeout=TIMEOUT_MS)
            _settled(page)
            _pick(page, "Dataset", BAD_DS)
            expect(page.get_by_text(re.compile("^Cannot load bad "))).to_be_visible(timeout=TIMEOUT_MS)
            assert f"Cannot load {BAD_DS}: path not found: " in _shown(page)
            _no_injected_element(page)
            seen.append(page.content())
            _pick(page, "Dataset", CLS_DS)
            expect(page.get_by_text(re.compile(r"^original · (cls|dog) ")).first).to_be_visible(timeout=TIMEOUT_MS)
            shown = _shown(page)
            assert f"{CLS_DS}: 8×8×1 as trained" in shown
            assert any(f"original · {c}" in shown for c in CLASSES)
            _checked(page, seen)

            # Studies: a payload typed as a factor's levels comes back in "Nothing was queued"
            _goto(page, base + "/studies")
            expect(page.get_by_role("heading", name="Studies")).to_be_visible(timeout=TIMEOUT_MS)
            _settled(page)
            levels = page.get_by_role("textbox", name="Levels (comma-separated)").first
            levels.fill(TYPED_LEVELS)
            levels.press("Enter")
            _settled(page)
            page.get_by_role("button", name="Preview").click()
            expect(page.get_by_text(re.compile("Nothing was queued"))).to_be_visible(timeout=TIMEOUT_MS)
            _settled(page)
            assert f"factors.optim.lr: cannot read '{TYPED_LEVELS}'" in _shown(page)
            _checked(page, seen)
        finally:
            browser.close()
    assert not [r for r in requests if HOST in r], requests
    pages = ("run detail", "compare", "datasets", "new run", "new run preview", "aug error", "augmentations", "studies")
    for page_name, html in zip(pages, seen, strict=True):
        for attr in ("href", "src"):
            at = html.find(f'{attr}="http://{HOST}')
            assert at < 0, (page_name, html[max(0, at - 400) : at + 100])
