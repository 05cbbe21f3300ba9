"""Calibration: ECE and reliability bins against a direct computation, temperature scaling on constructed and
real (digits, small_cnn) predictions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.config import parse_config
from engine.data import BUILTIN_SPECS, load_arrays, make_splits
from engine.export import load_checkpoint
from engine.sinks import EventSink
from engine.training.calibration import (
    calibrate,
    calibrate_model,
    expected_calibration_error,
    fit_temperature,
    logits_from_probs,
    nll,
    reliability_bins,
    scaled_probs,
)
from engine.training.loop import train
from tests.conftest import tiny_config


def _two_class(conf: float, n: int, n_correct: int):
    """n samples of top-1 confidence `conf` on class 0, the first n_correct of them labelled 0."""
    probs = np.tile([conf, 1 - conf], (n, 1))
    labels = np.array([0] * n_correct + [1] * (n - n_correct))
    return probs, labels


def _direct_ece(probs, labels, n_bins):
    conf, correct = probs.max(1), (probs.argmax(1) == labels)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        m = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if m.any():
            total += m.sum() / len(conf) * abs(correct[m].mean() - conf[m].mean())
    return total


def test_ece_of_constructed_cases():
    p, y = _two_class(0.8, 10, 8)  # 80 % confident, 80 % right
    assert expected_calibration_error(p, y, 10) == pytest.approx(0.0, abs=1e-12)
    p, y = _two_class(0.9, 10, 0)  # 90 % confident, always wrong
    assert expected_calibration_error(p, y, 10) == pytest.approx(0.9)
    p1, y1 = _two_class(0.95, 20, 10)
    p2, y2 = _two_class(0.65, 20, 20)
    # |0.5 - 0.95| and |1 - 0.65|, half the samples each
    assert expected_calibration_error(np.vstack([p1, p2]), np.concatenate([y1, y2]), 10) == pytest.approx(0.4)


@pytest.mark.parametrize("n_bins", [5, 15])
def test_ece_and_bins_equal_a_direct_computation_on_random_predictions(n_bins):
    rng = np.random.default_rng(0)
    probs = F.softmax(torch.as_tensor(rng.normal(0, 2, (500, 4))), dim=1).numpy()
    labels = rng.integers(0, 4, 500)
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(_direct_ece(probs, labels, n_bins))
    bins = reliability_bins(probs, labels, n_bins)
    assert len(bins) == n_bins and sum(b["count"] for b in bins) == 500
    conf = probs.max(1)
    for b in bins:
        m = (conf > b["lower"]) & (conf <= b["upper"])
        assert b["count"] == m.sum()
        if b["count"]:
            assert b["confidence"] == pytest.approx(conf[m].mean())
            assert b["accuracy"] == pytest.approx((probs.argmax(1) == labels)[m].mean())


def test_temperature_one_reproduces_the_input():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (50, 5))
    labels = rng.integers(0, 5, 50)
    probs = F.softmax(torch.as_tensor(logits), dim=1)
    assert torch.allclose(scaled_probs(logits, 1.0), probs, atol=1e-12)
    assert torch.allclose(scaled_probs(logits_from_probs(probs), 1.0), probs, atol=1e-12)
    ce = float(F.cross_entropy(torch.as_tensor(logits), torch.as_tensor(labels)))
    assert nll(logits, labels, 1.0) == pytest.approx(ce)


@pytest.mark.parametrize("scale,expect_above_one", [(4.0, True), (0.3, False)])
def test_fitted_temperature_undoes_over_and_under_confidence_and_lowers_nll(scale, expect_above_one):
    rng = np.random.default_rng(2)
    true_logits = rng.normal(0, 2, (2000, 10))
    labels = np.array([rng.choice(10, p=p) for p in F.softmax(torch.as_tensor(true_logits), 1).numpy()])
    logits = true_logits * scale  # calibrated logits made over- (x4) or under-confident (x0.3)
    t = fit_temperature(logits, labels)
    assert (t > 1) == expect_above_one
    assert t == pytest.approx(scale, rel=0.15)
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)
    report = calibrate(logits[:1000], labels[:1000], logits[1000:], labels[1000:])
    assert report.val_nll_after <= report.val_nll_before
    assert report.test_ece_after < report.test_ece_before


def test_already_calibrated_logits_keep_a_temperature_near_one():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (3000, 10))
    labels = np.array([rng.choice(10, p=p) for p in F.softmax(torch.as_tensor(logits), 1).numpy()])
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(1.0, abs=0.1) and nll(logits, labels, t) <= nll(logits, labels, 1.0)


def test_a_real_checkpoint_is_calibrated_on_val_and_reported_on_test(tmp_path):
    cfg = parse_config(tiny_config(**{"train.epochs": 2}))
    assert train(cfg, BUILTIN_SPECS["digits"], tmp_path, EventSink()).status == "completed"
    loaded = load_checkpoint(tmp_path / "best.pt")
    splits = make_splits(load_arrays(BUILTIN_SPECS["digits"]), loaded.cfg.data)
    r = calibrate_model(loaded.model, splits, loaded.mean, loaded.std)
    assert r.val_nll_after <= r.val_nll_before
    assert 0 <= r.test_ece_after <= 1 and 0 <= r.test_ece_before <= 1
    assert sum(b["count"] for b in r.test_bins_after) == sum(b["count"] for b in r.test_bins_before) > 0
    assert r.temperature != 1.0 or r.val_nll_after == r.val_nll_before
