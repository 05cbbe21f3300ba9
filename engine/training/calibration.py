"""Calibration: reliability-diagram bins, expected calibration error, and temperature scaling (Guo et al. 2017)
fitted on validation logits and reported on test.

Inputs are logits, or probabilities passed through `logits_from_probs` (their log: softmax(log p / T) is
temperature scaling of the logits, because log p differs from the logits by a per-row constant).
Confidence is the top-1 probability; bins split [0, 1] into equal widths, (lower, upper], the first one
closed at 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

TEMPERATURE_BOUNDS = (0.05, 20.0)


def _tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def logits_from_probs(probs, eps: float = 1e-12) -> torch.Tensor:
    return torch.log(_tensor(probs).clamp_min(eps))


def scaled_probs(logits, temperature: float = 1.0) -> torch.Tensor:
    return F.softmax(_tensor(logits) / temperature, dim=1)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    return float(F.cross_entropy(_tensor(logits) / temperature, torch.as_tensor(np.asarray(labels), dtype=torch.long)))


def reliability_bins(probs, labels, n_bins: int = 15) -> list[dict]:
    """Per confidence bin: its edges, mean confidence, accuracy and count (empty bins: count 0, no means)."""
    p = _tensor(probs)
    conf, pred = p.max(dim=1)
    return confidence_bins(conf, pred == torch.as_tensor(np.asarray(labels)), n_bins)


def confidence_bins(confidence, correct, n_bins: int = 15) -> list[dict]:
    """`reliability_bins` from each prediction's top-1 confidence and whether it was right: what a stored
    evaluation keeps (no full probability rows needed)."""
    conf = _tensor(confidence).reshape(-1)
    correct = torch.as_tensor(np.asarray(correct)).reshape(-1).double()
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    which = torch.bucketize(conf, edges[1:-1], right=False)  # (lower, upper]: a confidence on an edge goes below
    bins = []
    for b in range(n_bins):
        m = which == b
        n = int(m.sum())
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "confidence": float(conf[m].mean()) if n else None,
                "accuracy": float(correct[m].mean()) if n else None,
                "count": n,
            }
        )
    return bins


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Sum over bins of (count / N) x |accuracy - confidence|."""
    return ece_of_bins(reliability_bins(probs, labels, n_bins))


def ece_of_bins(bins: list[dict]) -> float:
    """Expected calibration error of reliability bins: sum of (count / N) x |accuracy - confidence|."""
    total = sum(b["count"] for b in bins)
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])


def fit_temperature(val_logits, val_labels) -> float:
    """The T minimising validation NLL (bounded scalar search on log T); 1.0 unless T beats it."""
    logits, labels = _tensor(val_logits), np.asarray(val_labels)
    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    res = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(lo, hi), method="bounded")
    t = float(np.exp(res.x))
    return t if nll(logits, labels, t) < nll(logits, labels, 1.0) else 1.0


@dataclass
class CalibrationReport:
    temperature: float
    val_nll_before: float
    val_nll_after: float
    test_nll_before: float
    test_nll_after: float
    test_ece_before: float
    test_ece_after: float
    test_bins_before: list[dict]
    test_bins_after: list[dict]

    def to_json(self) -> dict:
        return asdict(self)


def calibrate(val_logits, val_labels, test_logits, test_labels, n_bins: int = 15) -> CalibrationReport:
    """Fit T on validation, report NLL and ECE on test before and after."""
    t = fit_temperature(val_logits, val_labels)
    before, after = scaled_probs(test_logits), scaled_probs(test_logits, t)
    return CalibrationReport(
        temperature=t,
        val_nll_before=nll(val_logits, val_labels),
        val_nll_after=nll(val_logits, val_labels, t),
        test_nll_before=nll(test_logits, test_labels),
        test_nll_after=nll(test_logits, test_labels, t),
        test_ece_before=expected_calibration_error(before, test_labels, n_bins),
        test_ece_after=expected_calibration_error(after, test_labels, n_bins),
        test_bins_before=reliability_bins(before, test_labels, n_bins),
        test_bins_after=reliability_bins(after, test_labels, n_bins),
    )


def calibrate_model(model: torch.nn.Module, splits, mean, std, n_bins: int = 15) -> CalibrationReport:
    """A model's validation and test predictions (as the engine makes them) on `splits`, calibrated."""
    from engine.training.evaluate import predict_probs

    if not len(splits.val_y):
        raise ValueError("temperature scaling needs a validation split (data.val_fraction > 0)")
    cpu = torch.device("cpu")
    val, test = (predict_probs(model, x, mean, std, cpu) for x in (splits.val_x, splits.test_x))
    return calibrate(logits_from_probs(val), splits.val_y, logits_from_probs(test), splits.test_y, n_bins)
