"""What changes from one epoch to the next: frozen -> unfrozen backbone, Adam -> SGD, the LR schedule,
the label-smoothing schedule (linear, step or plateau) and Mixup/CutMix switched off after an epoch."""

from __future__ import annotations

from dataclasses import dataclass

from engine.models import set_frozen
from engine.training.losses import smoothing_at
from engine.training.optim import set_lr


@dataclass
class Phase:
    lr: float
    mixup: bool


def enter_epoch(run, epoch_idx: int) -> Phase:
    """Apply every phase switch for 0-based `epoch_idx`; returns what the epoch trains with."""
    cfg = run.cfg
    freeze = cfg.model.freeze
    if freeze.epochs or freeze.unfreeze_last is not None:  # no frozen epochs: last N from the start
        set_frozen(run.model, epoch_idx < freeze.epochs, freeze.unfreeze_last)
    if switches_to_sgd(cfg, epoch_idx, run.progress.optim_name):
        run.use_optimizer("sgd", cfg.optim.sgd_lr or cfg.optim.lr)
        run.sink.on_log(f"epoch {epoch_idx + 1}: switched optimizer to SGD, lr {run.progress.base_lr}")
    lr = set_lr(run.optimizer, run.progress.base_lr, run.schedule.factor(epoch_idx))
    run.loss_fn.smoothing = (
        run.smoothing.at(epoch_idx)
        if run.smoothing is not None
        else smoothing_at(cfg.loss, epoch_idx, cfg.train.epochs)
    )
    return Phase(lr=lr, mixup=run.mixup is not None and mixup_active(cfg, epoch_idx))


def switches_to_sgd(cfg, epoch_idx: int, optim_name: str) -> bool:
    """Adam-family -> SGD at optim.switch_to_sgd_epoch (SWATS-style), once."""
    return cfg.optim.switch_to_sgd_epoch == epoch_idx and optim_name != "sgd"


def mixup_active(cfg, epoch_idx: int) -> bool:
    """Mixup/CutMix is on for 0-based epochs before augment.mixup.stop_epoch: the last epochs then fit
    unmixed images, the kind the test split holds."""
    m = cfg.augment.mixup
    return m.enabled and (m.stop_epoch is None or epoch_idx < m.stop_epoch)
