"""K-fold models as one ensemble: each member's test probabilities, their mean and their vote.

The folds of one K-fold config share the test split (it is drawn before the folds) and differ in their
training images, so in their normalisation too: each member predicts with the mean/std its own
checkpoint records. The ensemble's prediction is the mean of the members' class probabilities
("mean"), or the majority vote of their predicted classes, ties broken by the mean ("vote"), the same
rules as test-time augmentation's (engine.training.evaluate.combine_mean / combine_vote).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.config import ExperimentConfig
from engine.data import DatasetSpec, load_arrays, make_splits
from engine.models import build_model
from engine.training import checkpoint as ckpt
from engine.training.evaluate import combine_mean, combine_vote, predict_probs, summarize
from engine.training.run import pick_device


@dataclass
class EnsembleResult:
    members: list[torch.Tensor]  # each member's (N, C) test probabilities, in the order given
    mean: torch.Tensor  # (N, C) mean of the members' probabilities
    vote: torch.Tensor  # (N, C) vote shares
    y: np.ndarray
    num_classes: int

    def summaries(self) -> dict[str, dict]:
        """summarize() of the mean and of the vote (accuracy, loss, confusion, per-class, predictions)."""
        return {
            "mean": summarize(self.mean, self.y, self.num_classes),
            "vote": summarize(self.vote, self.y, self.num_classes),
        }


def member_probabilities(path, spec: DatasetSpec, device_name: str = "auto", split: str = "test"):
    """One checkpoint's (N, C) probabilities on a split of its own config's data, and the split's labels."""
    state = ckpt.load(path)
    cfg = ExperimentConfig.model_validate_json(state["config"])
    splits = make_splits(load_arrays(spec), cfg.data)
    model = build_model(cfg.model.model_copy(update={"pretrained": False}), splits.channels, splits.num_classes)
    ema_weights = state.get("ema") if cfg.regularize.ema.evaluate_ema else None
    model.load_state_dict(ema_weights if ema_weights is not None else state["model"])
    device = pick_device(device_name)
    model.to(device)
    x, y = (splits.test_x, splits.test_y) if split == "test" else (splits.val_x, splits.val_y)
    return predict_probs(model, x, state["mean"], state["std"], device), y, splits.num_classes


def ensemble_checkpoints(paths, spec: DatasetSpec, device_name: str = "auto") -> EnsembleResult:
    """The members' test probabilities, their mean and their vote. Every member must see the same test images."""
    members, y, num_classes = [], None, None
    for path in paths:
        probs, labels, n = member_probabilities(path, spec, device_name)
        if y is not None and (len(labels) != len(y) or not np.array_equal(labels, y)):
            raise ValueError(f"{path}: its test split differs from the first member's; members must share it")
        members.append(probs)
        y, num_classes = labels, n
    if not members:
        raise ValueError("an ensemble needs at least one member")
    return EnsembleResult(members, combine_mean(members), combine_vote(members, num_classes), y, num_classes)
