"""Optimizers and LR schedules, keyed by config name.

Schedules are torch's own schedulers (LinearLR warmup chained by SequentialLR, CosineAnnealingLR,
MultiStepLR, StepLR, ReduceLROnPlateau, OneCycleLR) driving a one-parameter stand-in optimizer whose
LR is a factor of 1.0: the real optimizer's groups get base LR x their head/backbone multiplier x
that factor, so the head/backbone ratio holds under every schedule and the Adam->SGD switch only
changes the base. Stepped once per epoch (readable curves in the dashboard), except one-cycle, which
is defined per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim import lr_scheduler

from engine.metrics import lower_is_better
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


@dataclass(frozen=True)
class OptimizerSpec:
    """A torch optimizer and the OptimConfig fields it reads (lr and weight decay apply to all, per group)."""

    cls: type[torch.optim.Optimizer]
    fields: tuple[str, ...]


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(torch.optim.SGD, ("momentum", "nesterov")),
    "adam": OptimizerSpec(torch.optim.Adam, ("betas", "eps")),
    "adamw": OptimizerSpec(torch.optim.AdamW, ("betas", "eps")),
    "rmsprop": OptimizerSpec(torch.optim.RMSprop, ("momentum", "eps")),
}


def build_optimizer(cfg, model, backbone_lr_mult: float = 1.0, name: str | None = None, lr: float | None = None):
    """cfg: OptimConfig. `name`/`lr` override for the Adam->SGD switch."""
    name = name or cfg.name
    lr = lr or cfg.lr
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name}")
    spec = OPTIMIZERS[name]
    settings = {f: getattr(cfg, f) for f in spec.fields}
    if "nesterov" in settings:  # the switch from Adam keeps the config's momentum; nesterov needs some
        settings["nesterov"] = settings["nesterov"] and settings["momentum"] > 0
    return spec.cls(param_groups(model, lr, backbone_lr_mult, cfg.weight_decay), lr=lr, **settings)


def _stand_in() -> torch.optim.Optimizer:
    """An optimizer over one unused parameter, LR 1.0: what the schedulers step, so its LR is the factor."""
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


class EpochSchedule:
    """LR factor per epoch (warmup, then cosine / multistep / step / plateau / none) or per step (one-cycle).

    factor(epoch, step) multiplies each param group's base LR. A config reproduces a notebook that
    used torch's schedulers: warmup is LinearLR(warmup_start_factor, total_iters=warmup) chained by
    SequentialLR, so the main schedule counts epochs from the end of the warmup (cosine T_max,
    multistep milestones, step_size); past T_max cosine rises again, as torch's does; plateau is
    ReduceLROnPlateau fed with the end-of-epoch validation metric; one-cycle is OneCycleLR stepped
    per batch, without momentum cycling. eta_min stays an absolute LR: attach() gives the base.
    """

    def __init__(
        self, cfg, epochs: int, steps_per_epoch: int = 1, offset: int = 0, start: int = 0, span: int | None = None
    ):
        # offset: epochs before the schedule starts (the frozen-backbone phase with start_after_freeze); they
        # train at the base LR and the schedule runs over the remaining epochs, from its own epoch `start`
        # (0, or where the parent stopped for a continued run: continuing). span: the schedule's length in
        # epochs (cosine's default T_max, one-cycle's steps), the remaining epochs unless a parent's is kept.
        self.offset, self.start = offset, start
        self.cfg, self.epochs, self.steps_per_epoch = cfg, (epochs - offset if span is None else span), steps_per_epoch
        self._waiting = offset > 0  # still before the offset: plateau metrics are not the schedule's yet
        self._base = 1.0
        self._sched = None  # the position-driven scheduler, rebuilt when asked for an earlier position
        self._at = 0
        self._plateau = self._new_plateau() if cfg.name == "plateau" else None

    def attach(self, base_lr: float):
        """The optimizer's base LR (eta_min is absolute, so the cosine factor depends on it)."""
        if base_lr != self._base:
            self._base, self._sched = base_lr, None
        return self

    def factor(self, epoch: int, step: int = 0) -> float:
        c = self.cfg
        self._waiting = epoch < self.offset
        if self._waiting:
            return 1.0
        epoch += self.start - self.offset
        if c.name == "onecycle":
            return self._advance(min(epoch * self.steps_per_epoch + step, self._total_steps() - 1))
        if self._plateau is not None and epoch >= c.warmup_epochs:
            return self._plateau.optimizer.param_groups[0]["lr"]
        return self._advance(epoch)

    def observe(self, metrics: dict[str, float | None]) -> None:
        """Feed end-of-epoch metrics to ReduceLROnPlateau (the other schedules ignore them)."""
        value = metrics.get(self.cfg.plateau_metric)
        if self._plateau is not None and value is not None and not self._waiting:
            self._plateau.step(value)

    # A checkpoint keeps the plateau's progress under these names, and where the schedule sits on the
    # run's epochs (offset, start, span; the other schedules are functions of the epoch).
    def state_dict(self) -> dict:
        where = {"offset": self.offset, "start": self.start, "span": self.epochs}
        p = self._plateau
        if p is None:
            return {"plateau_factor": 1.0, "plateau_best": None, "plateau_bad": 0, "plateau_cooldown": 0, **where}
        return {
            "plateau_factor": p.optimizer.param_groups[0]["lr"],
            "plateau_best": None if p.best == p.mode_worse else p.best,
            "plateau_bad": p.num_bad_epochs,
            "plateau_cooldown": p.cooldown_counter,
            **where,
        }

    def position_after(self, epochs_done: int) -> tuple[int, int]:
        """(offset, start) of this schedule continued after `epochs_done` of its run's epochs: the head-only
        epochs still to come, and the schedule's own epochs already behind it."""
        return max(0, self.offset - epochs_done), self.start + max(0, epochs_done - self.offset)

    def load_state_dict(self, state: dict) -> None:
        if "start" in state:  # older checkpoints: where the schedule sits is the config's
            self.offset, self.start, self.epochs, self._sched = state["offset"], state["start"], state["span"], None
        if self._plateau is None:
            return
        p = self._plateau
        p.optimizer.param_groups[0]["lr"] = state["plateau_factor"]
        p.best = p.mode_worse if state["plateau_best"] is None else state["plateau_best"]
        p.num_bad_epochs, p.cooldown_counter = state["plateau_bad"], state["plateau_cooldown"]

    def _new_plateau(self) -> lr_scheduler.ReduceLROnPlateau:
        c = self.cfg
        mode = "min" if lower_is_better(c.plateau_metric) else "max"
        return lr_scheduler.ReduceLROnPlateau(
            _stand_in(), mode=mode, factor=c.plateau_factor, patience=c.plateau_patience, cooldown=c.plateau_cooldown
        )

    def _total_steps(self) -> int:
        return max(1, self.epochs * self.steps_per_epoch)

    def _advance(self, position: int) -> float:
        """The factor after `position` scheduler steps: step forward, or rebuild and replay to go back."""
        if self._sched is None or position < self._at:
            self._sched, self._at = self._build(), 0
        while self._at < position:
            self._sched.optimizer.step()  # a no-op (no gradient), in the order torch's schedulers expect
            self._sched.step()
            self._at += 1
        return self._sched.optimizer.param_groups[0]["lr"]

    def _build(self) -> lr_scheduler.LRScheduler:
        c, opt, w = self.cfg, _stand_in(), self.cfg.warmup_epochs
        if c.name == "onecycle":
            # torch divides by the warm-up's length in steps: keep it above zero for very short runs
            total = max(2, self._total_steps())
            pct = max(c.onecycle_pct_start, (1 + 1e-9) / total)
            return lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total, pct_start=pct, cycle_momentum=False)
        main = {
            "cosine": lambda: lr_scheduler.CosineAnnealingLR(
                opt, T_max=c.t_max or max(1, self.epochs - w), eta_min=c.eta_min / self._base
            ),
            "multistep": lambda: lr_scheduler.MultiStepLR(opt, milestones=c.milestones, gamma=c.gamma),
            "step": lambda: lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma),
        }.get(c.name)
        if not w:
            return main() if main else lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
        warmup = lr_scheduler.LinearLR(opt, start_factor=c.warmup_start_factor, total_iters=w)
        if main is None:  # none, or plateau (which takes over after the warmup): stay at 1.0 after it
            return warmup
        return lr_scheduler.SequentialLR(opt, [warmup, main()], milestones=[w])


def build_schedule(cfg, steps_per_epoch: int = 1) -> EpochSchedule:
    """cfg: ExperimentConfig. The run's schedule; with schedule.start_after_freeze it starts after the
    model.freeze.epochs head-only epochs (they keep the base LR), as if the run began there."""
    offset = cfg.model.freeze.epochs if cfg.schedule.start_after_freeze else 0
    return EpochSchedule(cfg.schedule, cfg.train.epochs, steps_per_epoch, offset).attach(cfg.optim.lr)


def set_lr(optimizer, base_lr: float, factor: float) -> float:
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g.get("lr_mult", 1.0) * factor
    return base_lr * factor
