"""Explanations (engine.explain, control.explain_jobs, the Explain tab) and TTA cost and benefit:
Grad-CAM maps for the custom, timm and torchvision CNN families, the 2-D embedding of a real trained
run, the background `python -m engine explain` job and its cache, and per-variant TTA timings."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine import explain
from tests.health_support import TTA, use_lab
from tests.test_pages_core import open_page, open_tab

MEAN, STD = [0.5] * 3, [0.25] * 3


def _model(source: str, name: str):
    from engine.config import ModelConfig
    from engine.models import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(source=source, name=name, pretrained=False), 3, 10)


# ------------------------------------------------------------------------------- Grad-CAM
@pytest.mark.parametrize(
    "source, name, size, layer",
    [
        ("custom", "small_cnn", 16, "features.5"),  # the last conv block
        ("timm", "resnet10t", 64, "layer4"),  # the last feature stage
        ("torchvision", "resnet18", 64, "layer4"),  # untrained (weights=None)
    ],
)
def test_gradcam_maps_have_the_input_size_and_differ_between_two_classes(source, name, size, layer):
    model = _model(source, name)
    x = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    assert explain.target_layer(model, 3, size) == layer
    a = explain.gradcam(model, x, [0, 0, 0], MEAN, STD)
    b = explain.gradcam(model, x, [1, 1, 1], MEAN, STD)
    assert a.shape == b.shape == (3, size, size)
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.max() > 0
    assert np.abs(a - b).mean() > 1e-3  # the evidence for class 0 is not the evidence for class 1
    rgb = explain.overlay(x[0], a[0], px=96)
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and rgb.shape[0] >= 96


def test_on_small_images_the_target_steps_back_to_a_block_with_more_than_one_position():
    model = _model("torchvision", "resnet18")
    assert explain.target_layer(model, 3, 32) == "layer3"  # layer4 is 1x1 at 32 px: a flat map
    assert explain.gradcam(model, np.zeros((1, 32, 32, 3), np.uint8), [2], MEAN, STD).shape == (1, 32, 32)


# ------------------------------------------------------------------------------- embeddings
def test_features_are_the_classifier_input_and_project_to_two_dimensions():
    model = _model("timm", "resnet10t").eval()
    x = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    feats, probs = explain.features_and_probs(model, x, MEAN, STD)
    with torch.no_grad():
        xt = explain._normalised(x, MEAN, STD, torch.device("cpu"))
        expected = model.forward_head(model.forward_features(xt), pre_logits=True)  # timm's own pre-logits
    assert feats.shape == (20, model.num_features) and probs.shape == (20, 10)
    assert np.allclose(feats, expected.numpy(), atol=1e-5)
    for method in explain.METHODS:
        assert explain.project(feats, method).shape == (20, 2)


def test_a_trained_runs_embedding_separates_its_classes_and_is_cached(noisy_run, tmp_path):
    from control import explain_jobs
    from control.preflight import resolve_dataset

    lab = noisy_run
    ck = explain_jobs.checkpoint_paths(lab["url"], lab["run_id"])["best"]
    spec = resolve_dataset(lab["url"], lab["config"].data.dataset)
    written = explain.explain_checkpoint(ck, spec, tmp_path, "test", "pca", device="cpu")
    emb = explain.load_cached(written["embedding"])
    n = len(emb["target"])
    assert emb["coords"].shape == (n, 2) and n > 300
    # k-NN in the 2-D view: far above chance (10 classes: 0.1)
    assert emb["meta"]["knn_accuracy"] > 0.3, emb["meta"]
    cams = explain.load_cached(written["gradcam"])
    assert cams["cam_pred"].shape == (explain.GALLERY, 8, 8) and cams["meta"]["layer"] == "features.5"
    assert set(cams["index"].tolist()) <= set(range(n))


def test_selected_point_names_its_image_whatever_form_the_browser_sends():
    from dashboard.plots_explain import selected_index

    assert selected_index({"points": [{"customdata": [17, 3, 5]}]}) == 17
    assert selected_index({"points": [{"customdata": {"0": 4, "1": 1, "2": 1}}]}) == 4
    assert selected_index({"points": []}) is None and selected_index(None) is None


# ------------------------------------------------------------------------------- TTA cost
def test_tta_timing_is_stored_for_every_variant(noisy_run):
    from db import queries

    lab = noisy_run
    tta = queries.tta_results(lab["url"], [lab["run_id"]])
    assert sorted(tta["variant"]) == sorted(TTA)
    assert (tta["seconds_per_image"] > 0).all(), tta[["variant", "seconds_per_image"]]


def test_evaluating_a_checkpoint_with_tta_times_each_variant(noisy_run):
    from control import explain_jobs
    from control.preflight import resolve_dataset
    from engine.training.final_eval import evaluate_checkpoint

    lab = noisy_run
    ck = explain_jobs.checkpoint_paths(lab["url"], lab["run_id"])["last"]
    spec = resolve_dataset(lab["url"], lab["config"].data.dataset)
    plain, tta, _ = evaluate_checkpoint(ck, spec, "test", "cpu", ["none", "hflip"])
    assert all(tta[v]["seconds_per_image"] > 0 for v in ("none", "hflip"))
    # "none" is the plain prediction: its per-class accuracy is the plain evaluation's recall per class
    assert tta["none"]["accuracy"] == pytest.approx(plain["accuracy"])
    assert tta["none"]["per_class"]["accuracy"] == pytest.approx(plain["per_class"]["recall"])


# ------------------------------------------------------------------------------- pages
def test_run_detail_tta_tab_shows_gain_against_time_per_image(noisy_run, monkeypatch):
    import re

    from db import queries

    use_lab(noisy_run, monkeypatch)
    at = open_page("run_detail", timeout=180, run=noisy_run["run_id"])
    tab = open_tab(at, "TTA")
    cost = next(d.value for d in tab.dataframe if "ms_per_image" in d.value.columns)
    assert sorted(cost["variant"]) == sorted(TTA) and (cost["ms_per_image"] > 0).all()
    assert cost.loc[cost["variant"] == "none", "gain_pp"].iloc[0] == 0
    assert cost.loc[cost["variant"] == "none", "cost_x"].iloc[0] == pytest.approx(1.0)
    assert {f"gain {c}" for c in range(10)} <= set(cost.columns)
    # each class's gain is the difference of the per-class accuracies stored for the variant and for "none"
    ck = next(m for mk in tab.markdown if (m := re.search(r"Cost and benefit\*\* \((.+?)\)", mk.value))).group(1)
    stored = queries.tta_results(noisy_run["url"], [noisy_run["run_id"]])
    stored = stored[stored["checkpoint"] == ck].drop_duplicates("variant", keep="last").set_index("variant")
    base = np.asarray(stored.loc["none", "per_class"]["accuracy"])
    gains = []
    for _, r in cost.iterrows():
        want = 100 * (np.asarray(stored.loc[r["variant"], "per_class"]["accuracy"]) - base)
        got = [r[f"gain {c}"] for c in range(10)]
        assert got == pytest.approx(want.tolist(), abs=1e-9), r["variant"]
        assert r["accuracy"] == pytest.approx(stored.loc[r["variant"], "accuracy"])
        gains += got
    assert any(abs(g) > 0 for g in gains)  # dihedral8 on digits changes some classes' accuracy


def test_explain_tab_computes_in_the_background_then_shows_gradcam_and_the_embedding(noisy_run, monkeypatch):
    from control import explain_jobs

    lab = noisy_run
    use_lab(lab, monkeypatch)
    run_id = lab["run_id"]
    at = open_page("run_detail", timeout=180, run=run_id)
    open_tab(at, "Explain")
    go = [b for b in at.button if b.label in ("Compute explanations", "Recompute")]
    assert go, [b.label for b in at.button]
    go[0].click().run()  # python -m engine explain, in its own process
    assert not at.exception, [e.message for e in at.exception]
    deadline = time.monotonic() + 300
    while explain_jobs.job(lab["url"], run_id) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()  # each run polls the job, as the page's fragment does
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert explain_jobs.cached(lab["url"], run_id, "best", "embedding", "test", "pca") is not None
    captions = [img.caption for el in at.image for img in el.proto.imgs]
    assert sum("· true" in c and "predicted" in c for c in captions) == explain.GALLERY
    assert any("k-NN accuracy in this 2-D view" in m.value for m in at.markdown)
    # a second view reads the cache: no job is started
    at2 = open_page("run_detail", timeout=180, run=run_id)
    open_tab(at2, "Explain")
    assert explain_jobs.job(lab["url"], run_id) is None
    assert [b.label for b in at2.button if b.label == "Recompute"] == ["Recompute"]


def test_galleries_explain_the_images_they_show_with_gradcam_on_their_own_split(noisy_run, monkeypatch):
    """Run detail's test-error gallery (the most confused cell) and its hard-and-forgotten validation gallery
    each ask the background explain job for Grad-CAM of exactly their images, of their own split."""
    from control import explain_jobs
    from dashboard import plots
    from db import queries
    from engine import image_history as ih
    from tests.health_support import await_explain, image_captions, run_splits, tile_index

    lab = noisy_run
    use_lab(lab, monkeypatch)
    url, run_id = lab["url"], lab["run_id"]
    sp = run_splits(lab)
    at = open_page("run_detail", timeout=180, run=run_id)

    # test errors: the most confused cell of the best checkpoint's test evaluation
    open_tab(at, "Test errors & gallery")
    ev = next(
        e
        for e in queries.evaluations(url, run_id, with_predictions=True)
        if (e["split"], e["checkpoint"]) == ("test", "best")
    )
    t, p = at.selectbox(key=f"detail_true_{run_id}").value, at.selectbox(key=f"detail_pred_{run_id}").value
    assert t is not None and p is not None and t != p
    idx = plots.matching_predictions(ev["predictions"], t, p, limit=48)
    assert idx and not image_captions(at, "test #")
    at.button(key=f"detail_err_cam_{run_id}").click().run()
    assert not at.exception, [e.message for e in at.exception]
    await_explain(at, url, run_id)
    cams = explain_jobs.cached_selection(url, run_id, "best", "test", idx)
    assert cams is not None and cams["index"].tolist() == idx and cams["meta"]["split"] == "test"
    assert np.array_equal(cams["target"], sp.test_y[idx]) and (cams["target"] == t).all()
    assert np.array_equal(cams["pred"], np.asarray(ev["predictions"]["pred"])[idx])  # the weights evaluated
    assert cams["cam_pred"].shape == cams["cam_true"].shape == (len(idx), 8, 8)
    assert np.abs(cams["cam_pred"].astype(float) - cams["cam_true"].astype(float)).max() > 0  # two classes
    shown = image_captions(at, "test #")
    assert [tile_index(c) for c in shown] == idx
    assert all(f"predicted {p} (" in c and c.endswith(f"· true {t}") for c in shown), shown[:3]

    # the validation history's gallery (hard and forgotten, else never learned): validation images
    open_tab(at, "Confusion by epoch")
    history = queries.prediction_history(url, run_id)
    s = ih.summary(history, sp.val_y, 48)
    last = history.confidence[-1]
    never = s["never"][np.argsort(-last[s["never"]], kind="stable")][:48].tolist()
    chosen, key = (s["hard"], "hard") if s["hard"] else (never, "never")
    assert chosen
    assert not np.array_equal(sp.val_y[chosen], sp.test_y[chosen])  # the splits' labels tell them apart
    ck = "last" if "last" in explain_jobs.checkpoint_paths(url, run_id) else "best"
    at.button(key=f"detail_{key}_cam_{run_id}").click().run()
    await_explain(at, url, run_id)
    cams = explain_jobs.cached_selection(url, run_id, ck, "val", chosen)
    assert cams is not None and cams["index"].tolist() == chosen and cams["meta"]["split"] == "val"
    assert np.array_equal(cams["target"], sp.val_y[chosen])
    assert np.array_equal(cams["pred"], history.pred[-1][chosen])  # the last checkpoint: the last epoch's predictions
    assert [tile_index(c) for c in image_captions(at, "val #")] == chosen

    # the confusion-by-epoch cell (the newest epoch, its most confused cell by default): Grad-CAM of its images
    # with that epoch's weights
    from dashboard.views import image_history

    t, p = (at.selectbox(key=f"detail_val_{w}_{run_id}").value for w in ("true", "pred"))
    assert t is not None and p is not None
    preds = image_history.epoch_predictions(history, sp, history.epochs[-1])
    cell = plots.matching_predictions(preds, t, p, limit=48)
    assert cell
    at.button(key=f"detail_cell_cam_{run_id}").click().run()
    assert not at.exception, [e.message for e in at.exception]
    await_explain(at, url, run_id)
    kept = explain_jobs.checkpoint_paths(url, run_id)
    ck = f"epoch_{history.epochs[-1]:04d}" if f"epoch_{history.epochs[-1]:04d}" in kept else "last"
    cams = explain_jobs.cached_selection(url, run_id, ck, "val", cell)
    assert cams is not None and cams["index"].tolist() == cell
    assert np.array_equal(cams["pred"], history.pred[-1][cell])  # the weights of the epoch the cell is of
