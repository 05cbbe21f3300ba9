"""In a real browser (the Playwright setup of tests/test_e2e_browser.py), by clicking only, on a run a real
`python -m engine train` process trained on the digits until it overfits: Run detail's curves show the best
epoch and the overfitting onset, the test-error gallery and the per-image history (forgotten, never learned)
show the images it keeps getting wrong, Data health shows label-noise suspects and train/test
near-duplicates, Explain computes Grad-CAM overlays in the background, TTA weighs accuracy gain against
time per image, and Export writes an ONNX file whose download onnxruntime runs with the torch model's
top-1 and probabilities. Every number the page shows is checked against the engine's own functions on
the stored results. Screenshots: artifacts/e2e_diag_*.png."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests import test_e2e_browser as e2e
from tests.browser_support import ROOT
from tests.test_diagnosis_panels import OVERFIT
from tests.test_e2e_browser import chromium, dashboard  # noqa: F401  (its fixtures: Chromium, `streamlit run`)

pytestmark = pytest.mark.browser

# the overfitting recipe of the diagnosis panels' AppTests, with a TTA variant besides "none" so the TTA tab
# has a cost and a benefit to weigh
RUN = {**OVERFIT, "name": "diag", "eval.tta": ["none", "hflip"]}


@pytest.fixture
def training(tmp_path):
    """The run's real engine process, started on the database and runs folder the `dashboard` fixture then
    serves (both in tmp_path), so it trains while streamlit starts. Yields (process, DB URL, config)."""
    from engine.config import parse_config
    from tests.conftest import tiny_config

    cfg = parse_config(tiny_config(**RUN))
    (tmp_path / "run.yaml").write_text(cfg.to_yaml())
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_FAULT", "LAB_BACKEND", "LAB_DB_URL")}
    env.update(LAB_RUNS_DIR=str(tmp_path / "runs"), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "train", str(tmp_path / "run.yaml"), "--db", url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, url, cfg
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _expected(url: str, run_id: int, cfg) -> dict:
    """What each panel must show, computed from the stored results with the engine's own functions."""
    from dashboard import plots
    from db import queries
    from engine import health
    from engine import image_history as ih
    from engine.diagnose import best_epoch, diagnose
    from tests.health_support import run_splits

    h = queries.metric_history(url, [run_id])
    curve = lambda split, name: h[(h.split == split) & (h.name == name)].sort_values("epoch")["value"].tolist()  # noqa: E731
    d = diagnose(curve("train", "loss"), curve("val", "loss"))
    sp = run_splits({"url": url, "config": cfg})
    evals = queries.evaluations(url, run_id, with_predictions=True)
    test = next(e for e in evals if e["split"] == "test" and e["checkpoint"] == "best")
    worst = plots.top_confusions(test["confusion"], sp.class_names, 1)
    history = queries.prediction_history(url, run_id, "val")
    s = ih.summary(history, sp.val_y, 48)
    noisy = [e for e in evals if (e.get("predictions") or {}).get("target")][-1]  # the panel opens on the newest
    return {
        "onset": d.onset,
        "best": best_epoch(curve("val", "acc"), "val_acc"),
        "test": test,
        "worst_cell": worst[0] if worst else None,
        "n_test": len(sp.test_y),
        "history": s,
        "noisy": noisy,
        "suspects": len(health.label_noise_suspects(noisy["predictions"], top=48, min_confidence=0.5)),
        "dups": health.scan_duplicates(sp.train_x, sp.test_x, health.DEFAULT_HAMMING),
        "splits": sp,
    }


def _open(page, tab: str):
    """Click Run detail's `tab`; its panel."""
    page.get_by_role("tab", name=tab).click()
    return page.get_by_role("tabpanel", name=tab)


def _checked(page, n: int, what: str, scroll_to=None) -> None:
    """The panel settled without an exception; its screenshot, artifacts/e2e_diag_<n>_<what>.png."""
    e2e._settled(page)
    e2e._no_exception(page)
    if scroll_to is not None:
        scroll_to.scroll_into_view_if_needed()
    page.screenshot(path=_shot(n, what), full_page=True)


def _shot(n: int, what: str) -> str:
    return str(e2e.ARTIFACTS / f"e2e_diag_{n}_{what}.png")


def test_a_new_user_diagnoses_a_finished_run_by_clicking_only(chromium, training, dashboard, tmp_path):  # noqa: F811
    import torch
    from playwright.sync_api import expect, sync_playwright

    from db import queries
    from engine.export import load_checkpoint, onnx_probabilities
    from engine.training.evaluate import predict_probs

    proc, url, cfg = training
    base, dashboard_url = dashboard
    assert dashboard_url == url  # the engine trained on the very database the dashboard serves
    out, _ = proc.communicate(timeout=900)  # a hang guard, not a measure of speed
    assert proc.returncode == 0, out[-3000:]
    run_id = int(out.split("run ", 1)[1].split()[0])
    assert queries.get_run(url, run_id)["status"] == "completed"
    want = _expected(url, run_id, cfg)
    assert want["onset"] is not None, "the recipe did not overfit"  # the curve must have an onset to mark
    assert want["worst_cell"] is not None and want["suspects"] > 0  # a model that makes mistakes to look at

    e2e.ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=e2e.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        e2e._patient(page)
        page_errors = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        try:
            page.goto(base + "/")
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Run detail").click()

            # 1. the curves: the best epoch and the overfitting onset marked, and the one-line reading
            expect(page.get_by_role("heading", name=f"Run #{run_id} · diag")).to_be_visible()
            expect(page.get_by_text(re.compile(r"completed · dataset digits"))).to_be_visible()
            curves = page.get_by_test_id("stPlotlyChart").filter(has_text=f"best: epoch {want['best']}")
            expect(curves).to_have_count(1)
            expect(curves).to_contain_text(f"overfitting from epoch {want['onset']}")
            expect(
                page.get_by_text(
                    f"Best val accuracy at epoch {want['best']} · 📈 overfitting since epoch {want['onset']}"
                )
            ).to_be_visible()
            _checked(page, 1, "curves")

            # 2. the test images it gets wrong: the most confused cell's gallery and the highest-loss images
            panel = _open(page, "Test errors & gallery")
            true_c, pred_c, count = want["worst_cell"]  # the cell the gallery opens on
            true_name, pred_name = (re.escape(want["splits"].class_names[c]) for c in (true_c, pred_c))
            shown = min(count, 48)
            expect(panel.get_by_text(re.compile(rf"^{shown} image\(s\) shown"))).to_be_visible()
            expect(panel.get_by_text("Highest-loss test images")).to_be_visible()
            captions = panel.get_by_test_id("stImageCaption")
            expect(captions.filter(has_text=re.compile(rf"^✗ true {true_name} → {pred_name} \(\d+%\)$"))).to_have_count(
                shown
            )
            expect(captions.filter(has_text=re.compile(r", loss \d+\.\d\d$"))).to_have_count(min(24, want["n_test"]))
            _checked(page, 2, "test_errors")

            # 3. the per-image history: forgotten at least once, never learned, and their galleries
            panel = _open(page, "Confusion by epoch")
            expect(panel.get_by_text("Per-image history (validation)")).to_be_visible()
            s = want["history"]
            for label, value in (
                ("Forgotten at least once", s["forgotten_once"]),
                ("Never learned", len(s["never"])),
                ("Right at the last epoch", int(s["correct"][-1].sum())),
            ):
                metric = panel.get_by_test_id("stMetric").filter(has_text=label)
                expect(metric.get_by_test_id("stMetricValue")).to_have_text(f"{value:,}")
            expect(
                panel.get_by_test_id("stPlotlyChart").filter(has_text="When each image was first learned")
            ).to_be_visible()
            expect(panel.get_by_text("Hard and forgotten")).to_be_visible()
            tiles = panel.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^#\d+ · forgotten \d+×"))
            expect(tiles).to_have_count(len(s["hard"]) + min(len(s["never"]), 48))
            _checked(page, 3, "image_history", scroll_to=tiles.first)

            # 4. Data health: label-noise suspects, and (a toggle's click) the train/test near-duplicates
            panel = _open(page, "Data health")
            ev = want["noisy"]
            picker = panel.get_by_role("combobox", name="Predictions of")
            expect(picker).to_match_aria_snapshot(
                f'- combobox "Predictions of": {ev["split"]} · {ev["checkpoint"]} (epoch {ev["epoch"]})'
            )
            expect(
                panel.get_by_text(f"{want['suspects']} image(s) the model puts, with at least 50% confidence")
            ).to_be_visible()
            suspects = panel.get_by_test_id("stImageCaption").filter(has_text=re.compile(rf"^{ev['split']} #\d+ label"))
            expect(suspects).to_have_count(want["suspects"])
            expect(panel.get_by_text("Near-duplicates between this run's train and test splits")).to_be_visible()
            e2e._settled(page)
            panel.get_by_text("Look for train/test near-duplicates").click()
            dups = want["dups"]
            if dups["pairs"]:
                expect(
                    panel.get_by_text(
                        f"{dups['test_images']} test image(s) ({dups['share']:.1%} of the test split) have a "
                        "near-duplicate in the training split"
                    )
                ).to_be_visible()
                pairs = panel.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^train #\d+ .* · d=\d+$"))
                expect(pairs).to_have_count(min(len(dups["pairs"]), 24))
            else:
                expect(panel.get_by_text("No near-duplicate: no test image is within")).to_be_visible()
            near = panel.get_by_text("Near-duplicates between this run's train and test splits")
            _checked(page, 4, "data_health", scroll_to=near)

            # 5. Explain: Grad-CAM of the highest-loss test images, computed by a background engine job
            panel = _open(page, "Explain")
            expect(panel.get_by_text("Not computed yet for this checkpoint and projection")).to_be_visible()
            e2e._settled(page)
            panel.get_by_role("button", name="Compute explanations").click()
            heading = panel.get_by_text(re.compile(r"the (\d+) highest-loss test images: where the evidence"))
            expect(heading).to_be_visible()  # the job ended and the page reran with its cached maps
            n_cams = int(re.search(r"the (\d+) highest-loss", heading.inner_text()).group(1))
            assert n_cams > 0
            overlays = panel.get_by_test_id("stImageCaption").filter(
                has_text=re.compile(r"^#\d+ predicted \d+ \(\d+%\) · true \d+$")
            )
            expect(overlays).to_have_count(n_cams)
            _checked(page, 5, "gradcam")

            # 6. TTA: is the accuracy gain worth the time per image?
            panel = _open(page, "TTA")
            expect(panel.get_by_text("Cost and benefit")).to_be_visible()
            cost = panel.get_by_test_id("stPlotlyChart").filter(has_text="wall time per image (ms, all views)")
            expect(cost).to_have_count(1)
            expect(cost).to_contain_text("accuracy gain over none (pp)")
            expect(cost).to_contain_text("hflip")
            _checked(page, 6, "tta", scroll_to=cost)

            # 7. Export to ONNX in the background, then download the file
            panel = _open(page, "Export")
            expect(panel.get_by_role("radio", name="ONNX")).to_be_checked()
            e2e._settled(page)
            panel.get_by_role("button", name="📦 Export").click()
            expect(panel.get_by_text("Export done.")).to_be_visible()
            download_button = panel.get_by_role("button", name=re.compile(rf"^⬇ run_{run_id}_\w+\.onnx \("))
            expect(download_button).to_be_visible()
            _checked(page, 7, "export")
            with page.expect_download(timeout=e2e.TIMEOUT_MS) as info:
                download_button.click()
            download = info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            e2e._no_exception(page)
            assert page_errors == []
        finally:
            page.screenshot(path=_shot(8, "last"), full_page=True)
            browser.close()

    # the downloaded model gives the run's torch model's predictions, on the real test images
    checkpoint = re.fullmatch(rf"run_{run_id}_(\w+)\.onnx", saved.name).group(1)
    x = want["splits"].test_x
    loaded = load_checkpoint(queries.checkpoint_path(url, run_id, checkpoint))
    torch_probs = predict_probs(loaded.model, x, loaded.mean, loaded.std, torch.device("cpu")).numpy()
    onnx_probs = onnx_probabilities(saved, x)
    assert onnx_probs.shape == (len(x), 10)
    assert np.array_equal(onnx_probs.argmax(1), torch_probs.argmax(1))
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4
    assert checkpoint == "best"  # the export's default: the checkpoint the test views above show
    assert np.array_equal(  # and the predictions the galleries above were drawn from
        torch_probs.argmax(1), np.asarray(want["test"]["predictions"]["pred"])
    )
