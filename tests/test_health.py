"""Data health (engine.health and its panels): near-duplicates between train and test, label-noise
suspects from a real trained run with deliberately flipped labels, class imbalance and the loss it
suggests, and the Datasets / Run detail panels in AppTest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import health
from tests.health_support import FLIP_SHARE, flipped_mask, run_splits, use_lab
from tests.test_pages_core import open_page, open_tab


def _digits_splits():
    from engine.config import DataConfig
    from engine.data import BUILTIN_SPECS, load_arrays, make_splits

    return make_splits(load_arrays(BUILTIN_SPECS["digits"]), DataConfig())


# ------------------------------------------------------------------------------- near-duplicates
def test_a_test_image_planted_in_train_is_found_and_unrelated_images_are_not():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (300, 32, 32, 1), dtype=np.uint8)  # unrelated pictures: noise
    test = rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8)
    copy = np.clip(test[7].astype(int) + 6, 0, 255).astype(np.uint8)  # a brighter re-save of test #7
    train[123] = copy
    pairs = health.near_duplicates(train, test, threshold=health.DEFAULT_HAMMING)
    assert [(p["train"], p["test"]) for p in pairs] == [(123, 7)]
    assert pairs[0]["distance"] <= 2
    assert health.duplicate_summary(pairs, len(test)) == {"pairs": 1, "test_images": 1, "share": 1 / 40}
    scan = health.scan_duplicates(train, test, max_pairs=0)  # the counts cover every pair, shown or not
    assert (scan["pairs"], scan["total_pairs"], scan["test_images"]) == ([], 1, 1)
    assert scan["min_distance"][7] <= 2 and np.delete(scan["min_distance"], 7).min() > health.DEFAULT_HAMMING


def test_a_digit_planted_in_the_training_split_is_found_among_real_digits():
    sp = _digits_splits()
    train_x = sp.train_x.copy()
    j = 11
    train_x[5] = sp.test_x[j]
    pairs = health.near_duplicates(train_x, sp.test_x, threshold=2)
    assert {"train": 5, "test": j, "distance": 0} in pairs
    # a pair of different digits whose hashes are far apart is not reported
    th, sh = health.phash_array(train_x), health.phash_array(sp.test_x)
    far = np.flatnonzero((health.hamming(sh[[j]], th)[0] > 8) & (sp.train_y != sp.test_y[j]))
    assert len(far) and not any(p["train"] == int(far[0]) and p["test"] == j for p in pairs)


# ------------------------------------------------------------------------------- imbalance
def test_imbalance_suggests_no_change_weighted_ce_or_focal_by_the_ratio():
    from engine.config import parse_config
    from tests.conftest import tiny_config

    balanced = health.imbalance_report([500, 480, 450])
    assert balanced["loss"] is None and balanced["ratio"] == pytest.approx(500 / 450)
    mild = health.imbalance_report([400, 100, 100], ["a", "b", "c"])
    assert mild["ratio"] == 4.0 and mild["loss"] == {"name": "ce", "class_weights": "inverse_frequency"}
    # inverse-frequency weights give every class the same total weight
    totals = np.asarray(mild["weights"]) * np.asarray(mild["counts"])
    assert totals == pytest.approx(np.full(3, totals[0]), rel=1e-3)
    severe = health.imbalance_report([1000, 50, 20, 0], ["a", "b", "c", "d"])
    assert severe["ratio"] == 50.0 and severe["loss"]["name"] == "focal"
    assert severe["empty_classes"] == ["d"]
    # the config "use this loss" sends is valid and carries the loss
    cfg = parse_config(health.with_loss(tiny_config(), severe["loss"]))
    assert cfg.loss.name == "focal" and cfg.loss.class_weights == "inverse_frequency"


# ------------------------------------------------------------------------------- label noise
def test_flipped_labels_rank_among_the_top_label_noise_suspects(noisy_run):
    from db import queries

    lab = noisy_run
    sp = run_splits(lab)
    evals = {e["split"]: e for e in queries.evaluations(lab["url"], lab["run_id"], with_predictions=True)}
    assert {"val", "test"} <= set(evals)
    found = total = 0
    for split, x, y in (("val", sp.val_x, sp.val_y), ("test", sp.test_x, sp.test_y)):
        preds = evals[split]["predictions"]
        assert np.array_equal(preds["target"], y)
        flipped = flipped_mask(x, y, lab["clean"])
        k = int(flipped.sum())
        assert k > 0
        top = [s["index"] for s in health.label_noise_suspects(preds, top=k, min_confidence=0.0)]
        found, total = found + int(flipped[top].sum()), total + k
    # chance: a random pick of k images holds FLIP_SHARE (8 %) flips; the model's confident mistakes hold most of them
    assert found / total >= 0.5 > 3 * FLIP_SHARE, (found, total)


def test_flipped_training_labels_rank_among_the_top_training_suspects(noisy_run, tmp_path):
    """The best checkpoint predicts the whole training split (as an evaluation does: no augmentation); the
    training images whose labels were flipped are most of its most confident mistakes."""
    from control import explain_jobs
    from control.preflight import resolve_dataset
    from db import queries
    from engine import explain
    from engine.data import load_arrays, make_splits

    lab = noisy_run
    spec = resolve_dataset(lab["url"], lab["config"].data.dataset)
    sp = make_splits(load_arrays(spec), lab["config"].data)
    best = explain_jobs.checkpoint_paths(lab["url"], lab["run_id"])["best"]
    got = explain.load_cached(explain.predict_split(best, spec, tmp_path, "train", device="cpu"))
    assert np.array_equal(got["target"], sp.train_y) and got["meta"]["split"] == "train"
    flipped = flipped_mask(sp.train_x, sp.train_y, lab["clean"])
    k = int(flipped.sum())
    assert k > 20
    preds = {name: got[name] for name in ("target", "pred", "confidence", "loss")}
    top = [s["index"] for s in health.label_noise_suspects(preds, top=k, min_confidence=0.0)]
    assert len(top) == k and flipped[top].mean() >= 0.5 > 3 * FLIP_SHARE, (int(flipped[top].sum()), k)

    # the same predictions as the run's own evaluation, on the test split
    test = explain.load_cached(explain.predict_split(best, spec, tmp_path, "test", device="cpu"))
    ev = next(
        e
        for e in queries.evaluations(lab["url"], lab["run_id"], with_predictions=True)
        if (e["split"], e["checkpoint"]) == ("test", "best")
    )
    assert np.array_equal(test["pred"], ev["predictions"]["pred"])
    assert np.allclose(test["confidence"], ev["predictions"]["confidence"], atol=1e-4)


def test_suspects_are_confidently_wrong_and_ranked_by_confidence():
    preds = {
        "target": [0, 1, 2, 3, 4],
        "pred": [0, 2, 0, 3, 1],
        "confidence": [0.99, 0.7, 0.95, 0.9, 0.4],
        "loss": [0.01, 2.0, 3.0, 0.1, 1.0],
    }
    got = health.label_noise_suspects(preds, min_confidence=0.5)
    assert [(s["index"], s["label"], s["pred"]) for s in got] == [(2, 2, 0), (1, 1, 2)]


# ------------------------------------------------------------------------------- pages
def test_run_detail_health_tab_shows_suspects_duplicates_and_sends_a_loss_to_the_builder(noisy_run, monkeypatch):
    lab = noisy_run
    use_lab(lab, monkeypatch)
    run_id = lab["run_id"]
    at = open_page("run_detail", timeout=180, run=run_id)
    tab = open_tab(at, "Data health")
    # the suspects gallery: tiles with the label and the predicted class
    captions = [img.caption for el in tab.image for img in el.proto.imgs]
    assert any(" label " in c and "predicted" in c for c in captions)
    at.toggle(key=f"health_{run_id}_dups_on").set_value(True).run()
    assert not at.exception, [e.message for e in at.exception]
    # exactly the scan of this run's own splits: its pairs as tiles, or the word that there is none
    sp = run_splits(lab)
    scan = health.scan_duplicates(sp.train_x, sp.test_x, health.DEFAULT_HAMMING)
    assert _pairs_shown(at) == [(p["train"], p["test"], p["distance"]) for p in scan["pairs"][:24]]
    if scan["pairs"]:
        assert any(m.value.startswith(f"{scan['test_images']} test image(s)") for m in at.warning)
    else:
        assert any(m.value.startswith("No near-duplicate") for m in at.success)
    # digits are balanced: no loss to send, and the suggestion says so
    assert any("balanced" in c.value for c in at.caption)
    assert not [b for b in at.button if b.label.startswith("Use this loss")]


def test_run_detail_finds_training_suspects_in_the_background_and_explains_them_with_gradcam(noisy_run, monkeypatch):
    from control import explain_jobs
    from tests.health_support import await_explain, image_captions, tile_index

    lab = noisy_run
    use_lab(lab, monkeypatch)
    url, run_id = lab["url"], lab["run_id"]
    sp = run_splits(lab)
    at = open_page("run_detail", timeout=180, run=run_id)
    open_tab(at, "Data health")
    assert not image_captions(at, "train #")
    at.button(key=f"health_{run_id}_train_go").click().run()  # python -m engine explain --split train --predictions
    assert not at.exception, [e.message for e in at.exception]
    await_explain(at, url, run_id)
    assert at.selectbox(key=f"health_{run_id}_ev").value.startswith("train · best (epoch ")  # shown once there
    cached = explain_jobs.cached(url, run_id, "best", "predictions", "train")
    assert cached is not None and np.array_equal(cached["target"], sp.train_y)
    want = health.label_noise_suspects(
        {name: cached[name] for name in ("target", "pred", "confidence", "loss")}, top=48, min_confidence=0.5
    )
    shown = image_captions(at, "train #")
    assert want and [tile_index(c) for c in shown] == [s["index"] for s in want]
    assert all(" label " in c and " · predicted " in c for c in shown)
    flipped = flipped_mask(sp.train_x, sp.train_y, lab["clean"])
    assert flipped[[s["index"] for s in want]].mean() > 3 * FLIP_SHARE  # the gallery holds the flipped labels

    # why: Grad-CAM of these very training images, for the predicted class and the (suspect) label
    at.button(key=f"health_{run_id}_noise_cam").click().run()
    await_explain(at, url, run_id)
    idx = [s["index"] for s in want]
    cams = explain_jobs.cached_selection(url, run_id, "best", "train", idx)
    assert cams is not None and cams["meta"]["split"] == "train"
    assert np.array_equal(cams["target"], sp.train_y[idx]) and cams["pred"].tolist() == [s["pred"] for s in want]
    overlays = [c for c in image_captions(at, "train #") if "· true " in c]
    assert [tile_index(c) for c in overlays] == idx


def _pairs_shown(at) -> list[tuple[int, int, int]]:
    """(train index, test index, distance) of every near-duplicate tile on the page."""
    import re

    tiles = [img.caption for el in at.image for img in el.proto.imgs]
    found = [re.match(r"train #(\d+) \(.*\) · test #(\d+) \(.*\) · d=(\d+)$", c) for c in tiles]
    return [tuple(int(g) for g in m.groups()) for m in found if m]


def _noise_datasets(url, folder: Path) -> None:
    """Two registered .npz sets of random pictures (nothing alike): "clean", and "leaky" whose training part
    holds copies of test image #7 (three, as validation is carved from the training part and may take one)."""
    from control import dataset_registry as registry

    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (200, 32, 32, 1), dtype=np.uint8)
    test = rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8)
    ys = {"y_train": rng.integers(0, 3, 200), "y_test": rng.integers(0, 3, 40)}
    np.savez(folder / "clean.npz", x_train=train, x_test=test, **ys)
    leaky = train.copy()
    leaky[[10, 70]] = test[7]
    leaky[150] = np.clip(test[7].astype(int) + 6, 0, 255)  # a brighter re-save
    np.savez(folder / "leaky.npz", x_train=leaky, x_test=test, **ys)
    for name in ("clean", "leaky"):
        registry.register_dataset(url, name, "npz", str(folder / f"{name}.npz"), {})


def _expected_pairs(url, name: str) -> list[tuple[int, int, int]]:
    from control.preflight import resolve_dataset
    from engine.config import DataConfig
    from engine.data import load_arrays, make_splits

    sp = make_splits(load_arrays(resolve_dataset(url, name)), DataConfig(dataset=name))
    return [(p["train"], p["test"], p["distance"]) for p in health.near_duplicates(sp.train_x, sp.test_x)]


def test_datasets_page_shows_a_planted_duplicate_pair_and_none_for_a_clean_set(db_url, tmp_path):
    _noise_datasets(db_url, tmp_path)
    leaky = _expected_pairs(db_url, "leaky")
    assert leaky and {t for _, t, _ in leaky} == {7} and _expected_pairs(db_url, "clean") == []
    at = open_page("datasets", timeout=180)
    for name in ("leaky", "clean"):
        at.selectbox(key="datasets_pick").set_value(name).run()
        at.toggle(key=f"datasets_health_{name}_dups_on").set_value(True).run()
        assert not at.exception, [e.message for e in at.exception]
        if name == "leaky":
            assert _pairs_shown(at) == leaky
            assert any(m.value.startswith("1 test image(s) (2.5% of the test split)") for m in at.warning)
        else:
            assert _pairs_shown(at) == []
            assert [m.value for m in at.success if m.value.startswith("No near-duplicate")]


def test_run_detail_health_tab_shows_a_planted_duplicate_pair_and_none_for_a_clean_run(db_url, tmp_path):
    from db import store
    from engine.config import parse_config
    from tests.conftest import tiny_config

    _noise_datasets(db_url, tmp_path)
    for name in ("leaky", "clean"):
        cfg = parse_config(tiny_config(**{"data.dataset": name, "name": name}))
        run_id = store.create_run(db_url, cfg.model_dump(mode="json"), name=name, status="completed")
        at = open_page("run_detail", timeout=180, run=run_id)
        open_tab(at, "Data health")
        at.toggle(key=f"health_{run_id}_dups_on").set_value(True).run()
        assert not at.exception, [e.message for e in at.exception]
        shown = _pairs_shown(at)
        if name == "leaky":
            assert shown == _expected_pairs(db_url, "leaky") and shown
            assert any("have a near-duplicate in the training split" in m.value for m in at.warning)
        else:
            assert shown == [] and any(m.value.startswith("No near-duplicate") for m in at.success)
            assert not any("have a near-duplicate" in m.value for m in at.warning)


def test_datasets_page_sends_the_suggested_loss_of_an_imbalanced_dataset_to_the_builder(db_url, tmp_path):
    from control import dataset_registry as registry
    from engine.data import BUILTIN_SPECS, load_arrays

    d = load_arrays(BUILTIN_SPECS["digits"])
    keep = np.concatenate([np.flatnonzero(d.train_y != 0), np.flatnonzero(d.train_y == 0)[:10]])
    np.savez(tmp_path / "skewed.npz", images=d.train_x[keep], labels=d.train_y[keep])
    registry.register_dataset(db_url, "skewed", "npz", str(tmp_path / "skewed.npz"), {})
    at = open_page("datasets", timeout=180)
    at.selectbox(key="datasets_pick").set_value("skewed").run()
    assert not at.exception, [e.message for e in at.exception]
    use = [b for b in at.button if b.label.startswith("Use this loss")]
    assert use and "focal" in use[0].label  # ~180 vs ~8 training images of class 0: above the focal ratio
    use[0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state["builder_config"]["loss"]["name"] == "focal"
    assert at.session_state["builder_config"]["loss"]["class_weights"] == "inverse_frequency"
    assert at.session_state["builder_config"]["data"]["dataset"] == "skewed"
    assert json.dumps(at.session_state["builder_config"])  # a plain config the builder can launch


def test_the_health_command_reports_imbalance_and_a_planted_duplicate(db_url, tmp_path):
    import os
    import subprocess
    import sys

    from engine.data import BUILTIN_SPECS, load_arrays

    d = load_arrays(BUILTIN_SPECS["digits"])
    keep = np.concatenate([np.flatnonzero(d.train_y != 3), np.flatnonzero(d.train_y == 3)[:40]])
    x, y = d.train_x[keep], d.train_y[keep]
    test_x, test_y = x[:100], y[:100]  # the dataset's own test split...
    leak = [0, 0, 0]  # ...copied into train three times (validation, carved from train, may take one)
    train_x, train_y = np.concatenate([x[100:], test_x[leak]]), np.concatenate([y[100:], test_y[leak]])
    np.savez(tmp_path / "leaky.npz", x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "health", f"npz:{tmp_path / 'leaky.npz'}", "--json", "--db", db_url],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["imbalance"]["loss"] == {"name": "ce", "class_weights": "inverse_frequency"}  # ~4.5x fewer 3s
    assert any(p["test"] == 0 and p["distance"] == 0 for p in report["duplicates"]["pairs"])
    assert report["duplicates"]["test_images"] >= 1
