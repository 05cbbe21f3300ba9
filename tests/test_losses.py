"""Losses against their references: torch's CrossEntropyLoss, timm's SoftTargetCrossEntropy, the focal and
Poly-1 formulas."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config import LossConfig
from engine.training.losses import ClassificationLoss, build_loss, inverse_frequency_weights, smoothing_at

C = 5
GEN = torch.Generator().manual_seed(0)
LOGITS = torch.randn(64, C, generator=GEN) * 3
TARGETS = torch.randint(0, C, (64,), generator=GEN)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_ce_with_label_smoothing_equals_torch(eps):
    ours = ClassificationLoss(C, smoothing=eps)(LOGITS, TARGETS)
    assert torch.allclose(ours, nn.CrossEntropyLoss(label_smoothing=eps)(LOGITS, TARGETS), atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_inverse_frequency_weighted_ce_equals_torch_weighted_ce(eps):
    labels = np.array([0] * 50 + [1] * 25 + [2] * 10 + [3] * 10 + [4] * 5)
    w = inverse_frequency_weights(labels, C)
    counts = np.bincount(labels)
    assert np.allclose(w.numpy(), len(labels) / (C * counts))  # inverse frequency: N / (C * count)
    assert w[4] > w[2] > w[1] > w[0]  # rarer class, larger weight
    ours = build_loss(LossConfig(class_weights="inverse_frequency", label_smoothing=eps), C, labels)(LOGITS, TARGETS)
    ref = nn.CrossEntropyLoss(weight=w, label_smoothing=eps)(LOGITS, TARGETS)
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_focal_with_gamma_zero_equals_ce(eps):
    focal = build_loss(LossConfig(name="focal", focal_gamma=0.0, label_smoothing=eps), C, TARGETS.numpy())
    assert torch.allclose(focal(LOGITS, TARGETS), nn.CrossEntropyLoss(label_smoothing=eps)(LOGITS, TARGETS), atol=1e-6)


def test_focal_matches_its_formula_and_down_weights_easy_examples():
    gamma, alpha = 2.0, [0.25, 1.0, 2.0, 0.5, 1.5]
    loss = build_loss(LossConfig(name="focal", focal_gamma=gamma, focal_alpha=alpha), C, TARGETS.numpy())
    p_t = F.softmax(LOGITS, 1)[torch.arange(64), TARGETS]
    ref = (-torch.tensor(alpha)[TARGETS] * (1 - p_t) ** gamma * torch.log(p_t)).mean()
    assert torch.allclose(loss(LOGITS, TARGETS), ref, atol=1e-6)

    plain = ClassificationLoss(C, focal_gamma=gamma)
    easy, hard = torch.tensor([[6.0, 0, 0, 0, 0]]), torch.tensor([[0.5, 0, 0, 0, 0]])
    y = torch.tensor([0])
    ce = ClassificationLoss(C)
    # the focal term shrinks a confident correct prediction far more than a hard one
    assert plain(easy, y) / ce(easy, y) < 0.01 < 0.3 < plain(hard, y) / ce(hard, y)


def test_focal_alpha_needs_one_value_per_class():
    with pytest.raises(ValueError, match="loss.focal_alpha"):
        build_loss(LossConfig(name="focal", focal_alpha=[1.0, 2.0]), C, TARGETS.numpy())


def _poly1_reference(logits, targets, epsilon, smoothing=0.0, weights=None):
    """Poly-1 written out: CE + epsilon * (1 - p_t), p_t the probability of the smoothed target.

    Class weights weigh each class's term, CE's and the poly term alike, with the mean taken over the
    weights of the targets: torch's weighted CE with label smoothing (the epsilon=0 test pins that)."""
    soft = F.one_hot(targets, C).float() * (1 - smoothing) + smoothing / C
    p = F.softmax(logits, 1)
    per_class = soft * (-torch.log(p) + epsilon * (1 - p))  # sums over classes to CE + epsilon * (1 - p_t)
    if weights is None:
        return per_class.sum(1).mean()
    return (per_class * weights).sum() / weights[targets].sum()


@pytest.mark.parametrize("epsilon", [1.0, 2.5, -0.5])
def test_poly1_matches_its_formula(epsilon):
    loss = build_loss(LossConfig(name="poly1", poly_epsilon=epsilon), C, TARGETS.numpy())
    p_t = F.softmax(LOGITS, 1)[torch.arange(64), TARGETS]
    direct = (F.cross_entropy(LOGITS, TARGETS, reduction="none") + epsilon * (1 - p_t)).mean()
    assert torch.allclose(loss(LOGITS, TARGETS), direct, atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_poly1_composes_with_label_smoothing_and_class_weights(smoothing):
    labels = np.array([0] * 50 + [1] * 25 + [2] * 10 + [3] * 10 + [4] * 5)
    w = inverse_frequency_weights(labels, C)
    for weights in (None, w):
        cfg = LossConfig(
            name="poly1",
            poly_epsilon=1.5,
            label_smoothing=smoothing,
            class_weights="none" if weights is None else "inverse_frequency",
        )
        ours = build_loss(cfg, C, labels)(LOGITS, TARGETS)
        assert torch.allclose(ours, _poly1_reference(LOGITS, TARGETS, 1.5, smoothing, weights), atol=1e-6)
    # mixed (soft) targets: linear in the mix, like every loss here
    loss = build_loss(LossConfig(name="poly1", label_smoothing=smoothing), C, labels)
    a, b, lam = TARGETS, TARGETS.roll(1), 0.3
    mixed = lam * F.one_hot(a, C).float() + (1 - lam) * F.one_hot(b, C).float()
    assert torch.allclose(loss(LOGITS, mixed), lam * loss(LOGITS, a) + (1 - lam) * loss(LOGITS, b), atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_poly1_with_epsilon_zero_equals_ce(smoothing):
    labels = np.array([0] * 50 + [1] * 25 + [2] * 10 + [3] * 10 + [4] * 5)
    for weights in ("none", "inverse_frequency"):
        cfg = LossConfig(name="poly1", poly_epsilon=0.0, label_smoothing=smoothing, class_weights=weights)
        w = inverse_frequency_weights(labels, C) if weights != "none" else None
        ref = nn.CrossEntropyLoss(weight=w, label_smoothing=smoothing)(LOGITS, TARGETS)
        assert torch.allclose(build_loss(cfg, C, labels)(LOGITS, TARGETS), ref, atol=1e-6)
    # and epsilon > 0 adds exactly epsilon * mean(1 - p_t) on top of CE
    p_t = F.softmax(LOGITS, 1)[torch.arange(64), TARGETS]
    gap = build_loss(LossConfig(name="poly1"), C, labels)(LOGITS, TARGETS) - F.cross_entropy(LOGITS, TARGETS)
    assert torch.allclose(gap, (1 - p_t).mean(), atol=1e-6)


def test_soft_target_ce_is_linear_in_mixed_targets_and_equals_timm():
    from timm.loss import SoftTargetCrossEntropy

    a, b, lam = TARGETS, TARGETS.roll(1), 0.3
    mixed = lam * F.one_hot(a, C).float() + (1 - lam) * F.one_hot(b, C).float()
    loss = ClassificationLoss(C)
    assert torch.allclose(loss(LOGITS, mixed), lam * loss(LOGITS, a) + (1 - lam) * loss(LOGITS, b), atol=1e-6)
    assert torch.allclose(loss(LOGITS, mixed), SoftTargetCrossEntropy()(LOGITS, mixed), atol=1e-6)
    # smoothing on top of mixed targets: the same as smoothing each part
    smooth = ClassificationLoss(C, smoothing=0.1)
    assert torch.allclose(smooth(LOGITS, mixed), lam * smooth(LOGITS, a) + (1 - lam) * smooth(LOGITS, b), atol=1e-6)


def test_weighted_ce_on_soft_targets_reduces_to_the_hard_case_for_one_hot_targets():
    w = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])
    loss = ClassificationLoss(C, class_weights=w)
    assert torch.allclose(loss(LOGITS, F.one_hot(TARGETS, C).float()), loss(LOGITS, TARGETS), atol=1e-6)


def test_label_smoothing_schedule_is_linear_from_start_to_end():
    cfg = LossConfig(label_smoothing=0.2, smoothing_end=0.0)
    values = [smoothing_at(cfg, e, 5) for e in range(5)]
    assert values == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])
    assert [smoothing_at(LossConfig(label_smoothing=0.1), e, 5) for e in range(5)] == [0.1] * 5
    # the loss follows the value it is given each epoch
    loss = ClassificationLoss(C, smoothing=values[0])
    first = loss(LOGITS, TARGETS)
    loss.smoothing = values[-1]
    assert torch.allclose(loss(LOGITS, TARGETS), F.cross_entropy(LOGITS, TARGETS))
    assert not torch.allclose(first, loss(LOGITS, TARGETS))
