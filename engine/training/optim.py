"""Optimizers and LR schedules, stepped once per epoch (warmup included), keyed by config name.

Epoch-level stepping keeps LR curves readable in the dashboard and makes the trajectory a simple
function of the epoch; one-cycle is the exception and steps per batch, as it is defined.
"""

from __future__ import annotations

import math

import torch

from engine.models import backbone_parameters, head_parameters


def param_groups(model: torch.nn.Module, lr: float, backbone_lr_mult: float, weight_decay: float):
    """Head and backbone as separate groups (separate LR); no weight decay on norms and biases."""
    groups = []
    for part, mult in ((head_parameters(model), 1.0), (backbone_parameters(model), backbone_lr_mult)):
        decay = [p for n, p in part if p.ndim > 1]
        no_decay = [p for n, p in part if p.ndim <= 1]
        for params, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if params:
                groups.append(
                    {"params": params, "lr": lr * mult, "initial_lr": lr * mult, "lr_mult": mult, "weight_decay": wd}
                )
    return groups


def build_optimizer(cfg, model, backbone_lr_mult: float = 1.0, name: str | None = None, lr: float | None = None):
    """cfg: OptimConfig. `name`/`lr` override for the Adam->SGD switch."""
    name = name or cfg.name
    lr = lr or cfg.lr
    groups = param_groups(model, lr, backbone_lr_mult, cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=cfg.betas, eps=cfg.eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {name}")


class EpochSchedule:
    """LR factor per epoch: linear warmup, then cosine / multistep / step / plateau / none; or one-cycle per step.

    factor(epoch) multiplies each param group's base LR. The formulas are torch's own, so a config
    reproduces a notebook that used them: warmup is LinearLR(warmup_start_factor, total_iters=warmup)
    chained like SequentialLR, i.e. the main schedule counts epochs from the end of the warmup
    (cosine T_max, multistep milestones, step_size); cosine is CosineAnnealingLR's closed form (past
    T_max it rises again, as torch's does); plateau is ReduceLROnPlateau (rel threshold 1e-4,
    patience, cooldown, factor) fed with the end-of-epoch validation metric; one-cycle is OneCycleLR
    (div_factor 25, final_div_factor 1e4, cosine annealing) stepped per batch, without momentum cycling.
    """

    PLATEAU_THRESHOLD = 1e-4  # torch's default, relative

    def __init__(self, cfg, epochs: int, steps_per_epoch: int = 1):
        self.cfg, self.epochs, self.steps_per_epoch = cfg, epochs, steps_per_epoch
        self.plateau_factor = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad = 0
        self.plateau_cooldown = 0

    def state_dict(self):
        return {k: getattr(self, k) for k in ("plateau_factor", "plateau_best", "plateau_bad", "plateau_cooldown")}

    def load_state_dict(self, state):
        for k, v in state.items():
            setattr(self, k, v)

    _base = 1.0  # set by attach(): the optimizer's base LR, so eta_min is an absolute LR

    def attach(self, base_lr: float):
        self._base = base_lr
        return self

    def factor(self, epoch: int, step: int = 0) -> float:
        c = self.cfg
        w = c.warmup_epochs
        if c.name == "onecycle":
            return self._onecycle(epoch * self.steps_per_epoch + step)
        if epoch < w:
            # from warmup_start_factor at epoch 0 to 1.0 at epoch w
            return c.warmup_start_factor + (1.0 - c.warmup_start_factor) * epoch / w
        e = epoch - w  # epochs since the main schedule started
        if c.name == "cosine":
            t_max = c.t_max or max(1, self.epochs - w)
            floor = c.eta_min / self._base
            return floor + (1.0 - floor) * 0.5 * (1 + math.cos(math.pi * e / t_max))
        if c.name == "multistep":
            return c.gamma ** sum(1 for m in c.milestones if e >= m)
        if c.name == "step":
            return c.gamma ** (e // c.step_size)
        if c.name == "plateau":
            return self.plateau_factor
        return 1.0

    def _onecycle(self, it: int) -> float:
        total = max(1, self.epochs * self.steps_per_epoch)
        it = min(it, total - 1)
        start = 1 / 25.0  # div_factor
        final = start / 1e4  # final_div_factor
        up_end = max(self.cfg.onecycle_pct_start * total - 1, 1e-9)  # the step at which the LR peaks

        def cos_anneal(a, b, pct):
            return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)

        if it <= up_end:
            return cos_anneal(start, 1.0, it / up_end)
        return cos_anneal(1.0, final, (it - up_end) / max(total - 1 - up_end, 1e-9))

    def observe(self, metrics: dict[str, float | None]) -> None:
        """Feed end-of-epoch metrics (ReduceLROnPlateau semantics: threshold, patience, cooldown, factor)."""
        c = self.cfg
        if c.name != "plateau":
            return
        value = metrics.get(c.plateau_metric)
        if value is None:
            return
        if self.plateau_best is None:
            better = True
        elif c.plateau_metric == "val_loss":  # mode min
            better = value < self.plateau_best * (1 - self.PLATEAU_THRESHOLD)
        else:  # val_acc, mode max
            better = value > self.plateau_best * (1 + self.PLATEAU_THRESHOLD)
        if better:
            self.plateau_best, self.plateau_bad = value, 0
        else:
            self.plateau_bad += 1
        if self.plateau_cooldown > 0:
            self.plateau_cooldown -= 1
            self.plateau_bad = 0
        if self.plateau_bad > c.plateau_patience:
            self.plateau_factor *= c.plateau_factor
            self.plateau_cooldown, self.plateau_bad = c.plateau_cooldown, 0


def set_lr(optimizer, base_lr: float, factor: float) -> float:
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g.get("lr_mult", 1.0) * factor
    return base_lr * factor
