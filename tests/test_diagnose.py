"""Curves that read themselves: each rule on constructed curves, then on real digits runs."""

import tempfile

from engine.config import parse_config
from engine.data import BUILTIN_SPECS
from engine.diagnose import (
    HEALTHY,
    LR_TOO_HIGH,
    UNDERFITTING,
    UNSTABLE,
    best_epoch,
    diagnose,
    diverged_early,
    loss_spikes,
    overfitting_onset,
)
from engine.sinks import EventSink
from engine.training.loop import train
from tests.conftest import tiny_config

FALLING = [2.0, 1.2, 0.8, 0.6, 0.45, 0.35, 0.28, 0.22, 0.18, 0.15]


def test_best_epoch_is_direction_aware_and_one_based():
    assert best_epoch([0.9, 0.5, 0.7], "val_loss") == 2
    assert best_epoch([0.5, 0.9, 0.7], "val_acc") == 2
    assert best_epoch([0.5, 0.9, 0.9], "val_acc") == 2  # ties: the earliest
    assert best_epoch([float("nan"), 0.4], "val_loss") == 2
    assert best_epoch([], "val_loss") is None


def test_val_loss_rising_while_train_loss_falls_is_overfitting_from_the_val_minimum():
    val = [2.1, 1.4, 1.0, 0.8, 0.7, 0.75, 0.82, 0.9, 0.97, 1.05]
    assert overfitting_onset(FALLING, val, k=3) == 5
    d = diagnose(FALLING, val)
    assert d.label == "overfitting since epoch 5" and d.onset == 5
    assert overfitting_onset(FALLING, val, k=6) is None  # only 5 rising epochs


def test_a_widening_gap_with_stalled_val_loss_is_overfitting_but_not_while_val_loss_improves():
    stalled = [2.1, 1.4, 1.0, 0.8, 0.7, 0.7, 0.71, 0.7, 0.72, 0.71]  # flat, never rising 3 epochs in a row
    assert overfitting_onset(FALLING, stalled) == 5
    improving = [2.2, 1.6, 1.3, 1.15, 1.05, 1.0, 0.97, 0.95, 0.94, 0.935]  # gap widens early, val keeps improving
    assert overfitting_onset(FALLING, improving) is None
    assert diagnose(FALLING, improving).label == HEALTHY


def test_train_loss_above_val_early_is_not_a_widening_gap():
    train_loss = [1.5, 0.9, 0.5, 0.3, 0.2]  # averaged over a learning epoch: above val at first
    val = [0.9, 0.6, 0.45, 0.33, 0.3]
    assert overfitting_onset(train_loss, val) is None and diagnose(train_loss, val).label == HEALTHY


def test_both_losses_plateauing_high_is_underfitting():
    train_loss = [2.3, 2.0, 1.9, 1.85, 1.84, 1.84, 1.83]
    val = [2.3, 2.05, 1.95, 1.9, 1.9, 1.89, 1.9]
    assert diagnose(train_loss, val).label == UNDERFITTING
    converged = [2.3, 0.6, 0.3, 0.3, 0.3, 0.3, 0.3]  # a low plateau is convergence
    assert diagnose(converged, converged).label == HEALTHY


def test_loss_spikes_are_instability_but_noise_near_zero_is_not():
    spiky = [2.0, 1.2, 0.8, 1.5, 0.6, 0.5, 1.1, 0.4]
    assert loss_spikes(spiky) == [4, 7]
    assert diagnose(spiky, spiky).label == UNSTABLE
    tiny_noise = [2.0, 0.5, 0.05, 0.007, 0.009, 0.006, 0.008]
    assert loss_spikes(tiny_noise) == []


def test_early_divergence_is_lr_too_high():
    assert diverged_early([2.3, 4.5, 9.0, 9.1, 9.0, 9.0])
    assert diagnose([2.3, 4.5, 9.0, 9.1, 9.0, 9.0], [2.3, 5.0, 9.5, 9.4, 9.5, 9.4]).label == LR_TOO_HIGH
    assert diagnose([2.3, float("nan")], [2.3, float("nan")]).label == LR_TOO_HIGH
    assert diagnose(FALLING, FALLING).label == HEALTHY


class Curves(EventSink):
    def __init__(self):
        self.train_loss, self.val_loss = [], []

    def on_epoch_end(self, epoch, metrics, confusion):
        self.train_loss.append(metrics[("train", "loss")])
        self.val_loss.append(metrics[("val", "loss")])


def _curves(**overrides) -> Curves:
    sink = Curves()
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(parse_config(tiny_config(**overrides)), BUILTIN_SPECS["digits"], run_dir, sink)
    assert result.status == "completed"
    return sink


def test_a_real_run_on_100_digits_overfits_and_the_rule_fires():
    c = _curves(**{
        "data.max_train_samples": 100, "train.epochs": 20, "train.batch_size": 16, "optim.lr": 0.01,
        "optim.weight_decay": 0.0, "model.dropout": 0.0, "schedule.name": "none",
    })  # fmt: skip
    d = diagnose(c.train_loss, c.val_loss)
    assert d.onset is not None and d.label == f"overfitting since epoch {d.onset}"
    assert c.val_loss[-1] > min(c.val_loss) and c.train_loss[-1] < c.train_loss[d.onset - 1]
    assert 2 <= d.onset <= 17


def test_a_real_healthy_run_is_diagnosed_healthy():
    c = _curves(**{"train.epochs": 4})
    assert diagnose(c.train_loss, c.val_loss).label == HEALTHY
    assert best_epoch(c.val_loss, "val_loss") >= 3
