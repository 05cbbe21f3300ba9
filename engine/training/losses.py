"""Losses, all taking soft or hard targets so Mixup/CutMix work with every one of them.

- CE with label smoothing (optionally scheduled over epochs) and inverse-frequency class weights;
- focal loss (Lin et al.) with per-class alpha, gamma and smoothing; gamma=0, alpha=None is CE;
- Poly-1 (Leng et al., PolyLoss): CE + epsilon * (1 - p_t); epsilon=0 is CE.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def smooth_targets(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Hard (N,) or soft (N, C) targets -> soft targets with label smoothing applied."""
    if targets.ndim == 1:
        targets = F.one_hot(targets, num_classes).float()
    return targets * (1.0 - smoothing) + smoothing / num_classes


class ClassificationLoss(nn.Module):
    """Cross-entropy family on hard (N,) or soft (N, C) targets.

    - smoothing: label smoothing epsilon, applied to hard and soft targets alike (settable per epoch);
    - class_weights: same meaning as nn.CrossEntropyLoss(weight=w): the mean is weighted by the
      weight of each sample's (unsmoothed) target, so it equals torch's loss with or without smoothing;
    - focal_gamma: focal loss, each class term scaled by (1 - p_c)^gamma; gamma=0 is plain CE;
    - focal_alpha: per-class alpha; a sample is weighted by alpha of its target (mixed for soft targets);
    - poly_epsilon: Poly-1, adds epsilon * (1 - p_t) with p_t the probability of the (smoothed, mixed)
      target distribution; it is a per-class term like CE's, so class weights weigh it the same way.
    """

    def __init__(
        self,
        num_classes: int,
        smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
        focal_gamma: float | None = None,
        focal_alpha: torch.Tensor | None = None,
        poly_epsilon: float | None = None,
    ):
        super().__init__()
        self.num_classes, self.smoothing, self.focal_gamma = num_classes, smoothing, focal_gamma
        self.poly_epsilon = poly_epsilon
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.register_buffer("focal_alpha", focal_alpha, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        target_dist = F.one_hot(targets, self.num_classes).float() if targets.ndim == 1 else targets.float()
        soft = smooth_targets(target_dist, self.num_classes, self.smoothing)
        log_p = F.log_softmax(logits.float(), dim=1)
        per_class = -soft * log_p  # (N, C)
        if self.focal_gamma is not None:
            per_class = per_class * (1.0 - log_p.exp()).pow(self.focal_gamma)
        if self.poly_epsilon is not None:  # sum_c soft_c * (1 - p_c) = 1 - p_t, as soft sums to 1
            per_class = per_class + self.poly_epsilon * soft * (1.0 - log_p.exp())
        per_sample_weight = None
        if self.focal_alpha is not None:
            per_sample_weight = target_dist @ self.focal_alpha
        if self.class_weights is not None:
            per_sample = (per_class * self.class_weights.view(1, -1)).sum(dim=1)
            norm = target_dist @ self.class_weights
            if per_sample_weight is not None:
                per_sample = per_sample * per_sample_weight
            return per_sample.sum() / norm.sum().clamp_min(1e-12)
        per_sample = per_class.sum(dim=1)
        if per_sample_weight is not None:
            per_sample = per_sample * per_sample_weight
        return per_sample.mean()


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    counts = np.where(counts == 0, 1.0, counts)
    return torch.tensor(counts.sum() / (num_classes * counts), dtype=torch.float32)


def smoothing_at(cfg, epoch: int, epochs: int) -> float:
    """Label smoothing for this epoch: constant, or linear from label_smoothing to smoothing_end."""
    if cfg.smoothing_end is None or epochs <= 1:
        return cfg.label_smoothing
    t = epoch / (epochs - 1)
    return cfg.label_smoothing + t * (cfg.smoothing_end - cfg.label_smoothing)


class SmoothingSchedule:
    """Label smoothing per 0-based epoch (cfg: LossConfig): constant, linear (smoothing_at), step or plateau.

    step and plateau keep a share f of the distance from smoothing_end: smoothing = end + (start - end) * f,
    f starting at 1 and multiplied by smoothing_factor at each milestone (after that many epochs, as LR
    milestones count) or at each plateau of smoothing_metric, which is torch's ReduceLROnPlateau on a
    stand-in optimizer (patience, mode), fed the end-of-epoch validation metrics."""

    def __init__(self, cfg, epochs: int):
        self.cfg, self.epochs = cfg, epochs
        self.kind = "constant" if cfg.smoothing_end is None else cfg.smoothing_schedule
        self._plateau = None
        if self.kind == "plateau":
            from torch.optim import lr_scheduler

            from engine.metrics import lower_is_better

            stand_in = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            self._plateau = lr_scheduler.ReduceLROnPlateau(
                stand_in,
                mode="min" if lower_is_better(cfg.smoothing_metric) else "max",
                factor=cfg.smoothing_factor,
                patience=cfg.smoothing_patience,
                min_lr=0.0,
                eps=0.0,
            )

    def at(self, epoch: int) -> float:
        c = self.cfg
        if self.kind in ("constant", "linear"):
            return smoothing_at(c, epoch, self.epochs)
        if self.kind == "step":
            share = c.smoothing_factor ** sum(1 for m in c.smoothing_milestones if epoch >= m)
        else:
            share = self._plateau.optimizer.param_groups[0]["lr"]
        return c.smoothing_end + (c.label_smoothing - c.smoothing_end) * share

    def observe(self, metrics: dict[str, float | None]) -> None:
        value = metrics.get(self.cfg.smoothing_metric)
        if self._plateau is not None and value is not None:
            self._plateau.step(value)

    def state_dict(self) -> dict | None:
        p = self._plateau
        if p is None:
            return None
        best = None if p.best == p.mode_worse else p.best
        return {"share": p.optimizer.param_groups[0]["lr"], "best": best, "bad": p.num_bad_epochs}

    def load_state_dict(self, state: dict | None) -> None:
        if self._plateau is None or not state:
            return
        p = self._plateau
        p.optimizer.param_groups[0]["lr"] = state["share"]
        p.best = p.mode_worse if state["best"] is None else state["best"]
        p.num_bad_epochs = state["bad"]


def build_loss(cfg, num_classes: int, train_labels: np.ndarray) -> ClassificationLoss:
    """cfg: LossConfig."""
    weights = inverse_frequency_weights(train_labels, num_classes) if cfg.class_weights == "inverse_frequency" else None
    alpha = None
    if cfg.name == "focal" and cfg.focal_alpha is not None:
        if len(cfg.focal_alpha) != num_classes:
            raise ValueError(
                f"loss.focal_alpha: has {len(cfg.focal_alpha)} values but the dataset has {num_classes} classes"
            )
        alpha = torch.tensor(cfg.focal_alpha, dtype=torch.float32)
    return ClassificationLoss(
        num_classes,
        cfg.label_smoothing,
        weights,
        cfg.focal_gamma if cfg.name == "focal" else None,
        alpha,
        poly_epsilon=cfg.poly_epsilon if cfg.name == "poly1" else None,
    )
