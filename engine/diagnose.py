"""Curves that read themselves: pure rules over per-epoch train/val loss (and accuracy) lists.

Epochs are 1-based, as the dashboard and the DB count them. The rules, in the order `diagnose` tries them:
  LR too high (early divergence): a non-finite loss, or the train loss rising above its first epoch early on;
  unstable (loss spikes): the train loss jumping by more than `spike` over the epoch before, then falling back;
  overfitting since epoch E: over the `k` epochs after E train loss falls while val loss rises every
    epoch, or the val - train gap widens every epoch without a new best val loss;
  underfitting (both losses plateau high): the last `k` epochs barely move and the train loss has not even
    halved from its first epoch;
  healthy: none of the above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.metrics import lower_is_better

HEALTHY = "healthy"
UNDERFITTING = "underfitting (both losses plateau high)"
UNSTABLE = "unstable (loss spikes)"
LR_TOO_HIGH = "LR too high (early divergence)"


@dataclass(frozen=True)
class Diagnosis:
    label: str  # one of the module's labels; "overfitting since epoch E" carries its epoch
    onset: int | None = None  # the overfitting onset (1-based), when that is the diagnosis

    def __str__(self) -> str:
        return self.label


def best_epoch(values: list[float], metric: str = "val_loss") -> int | None:
    """1-based epoch of the best value; lower is better for losses, higher for accuracies. Ties: the earliest."""
    finite = [(v, i) for i, v in enumerate(values, start=1) if v is not None and math.isfinite(v)]
    if not finite:
        return None
    sign = 1 if lower_is_better(metric) else -1
    return min(finite, key=lambda vi: (sign * vi[0], vi[1]))[1]


def _rising(values: list[float], start: int, k: int) -> bool:
    return all(values[i + 1] > values[i] for i in range(start, start + k))


def _no_new_best(values: list[float], start: int, k: int) -> bool:
    best = min(values[: start + 1])
    return all(v >= best for v in values[start + 1 : start + k + 1])


def overfitting_onset(train_loss: list[float], val_loss: list[float], k: int = 3) -> int | None:
    """The first epoch E such that over the k epochs after it the train loss falls (net, so the noise of a
    nearly-zero loss does not hide it) while the val loss rises every epoch, or the val - train gap (val
    above train) widens every epoch with no new best val loss (a gap opening while val loss still improves
    is ordinary early training). None if it never happens."""
    n = min(len(train_loss), len(val_loss))
    gap = [v - t for t, v in zip(train_loss[:n], val_loss[:n], strict=True)]
    for start in range(n - k):
        if train_loss[start + k] >= train_loss[start]:
            continue
        widening = gap[start] > 0 and _rising(gap, start, k) and _no_new_best(val_loss, start, k)
        if _rising(val_loss, start, k) or widening:
            return start + 1
    return None


def diverged_early(train_loss: list[float], early: int | None = None, factor: float = 1.5) -> bool:
    """A non-finite loss anywhere, or, in the first third of training (at least 2 epochs), a train loss above
    `factor` x the first epoch's."""
    if any(not math.isfinite(v) for v in train_loss):
        return True
    early = early or max(2, len(train_loss) // 3)
    return any(v > factor * train_loss[0] for v in train_loss[1 : early + 1])


def loss_spikes(train_loss: list[float], spike: float = 0.3, floor: float = 0.1) -> list[int]:
    """1-based epochs whose train loss jumped by more than `spike` (relative) over the epoch before and did
    not stay there: the next epoch (if any) is lower again. Jumps are measured against at least `floor` x the
    first epoch's loss, so the noise of a nearly-zero loss is no spike."""
    out = []
    for i in range(1, len(train_loss)):
        jumped = train_loss[i] - train_loss[i - 1] > spike * max(train_loss[i - 1], floor * train_loss[0])
        if jumped and (i + 1 == len(train_loss) or train_loss[i + 1] < train_loss[i]):
            out.append(i + 1)
    return out


def plateaus_high(train_loss: list[float], val_loss: list[float], k: int = 3, tol: float = 0.02) -> bool:
    """The last k+1 epochs of both losses within `tol` (relative) of each other, and the train loss still
    above half of its first epoch's."""
    if len(train_loss) < k + 1 or len(val_loss) < k + 1:
        return False

    def flat(values):
        tail = values[-(k + 1) :]
        return (max(tail) - min(tail)) <= tol * max(abs(min(tail)), 1e-12)

    return flat(train_loss) and flat(val_loss) and train_loss[-1] > 0.5 * train_loss[0]


def diagnose(train_loss: list[float], val_loss: list[float], k: int = 3) -> Diagnosis:
    """One line for a run's curves (see the module docstring for the rules and their order)."""
    if not train_loss:
        return Diagnosis(HEALTHY)
    if diverged_early(train_loss):
        return Diagnosis(LR_TOO_HIGH)
    if loss_spikes(train_loss):
        return Diagnosis(UNSTABLE)
    if val_loss:
        onset = overfitting_onset(train_loss, val_loss, k)
        if onset is not None:
            return Diagnosis(f"overfitting since epoch {onset}", onset)
        if plateaus_high(train_loss, val_loss, k):
            return Diagnosis(UNDERFITTING)
    return Diagnosis(HEALTHY)
