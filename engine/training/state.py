"""What a run carries from one epoch to the next, and the checkpoint dicts built from it.

`last.pt` and `epoch_NNNN.pt` hold a full TrainState (enough to resume exactly); `best.pt` holds only
the weights that were evaluated. The checkpoint's keys are written and read here, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.metrics import is_better


@dataclass
class Progress:
    """The loop's own bookkeeping: finished epochs, the optimizer in use, the best and early-stopping records."""

    optim_name: str
    base_lr: float
    epoch: int = 0  # epochs finished
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs without an early-stopping improvement
    es_best: float | None = None
    ema_updates: int = 0  # optimizer steps the EMA has averaged (its warmup counts them)

    def record(self, epoch: int, metrics: dict, cfg) -> tuple[bool, float]:
        """Note a finished epoch's metrics; returns (the best metric improved, its value this epoch)."""
        self.epoch = epoch
        best_metric = cfg.eval.best_metric.removeprefix("val_")
        value = metrics.get(("val", best_metric), metrics[("train", best_metric)])
        improved = is_better(best_metric, value, self.best_value)
        if improved:
            self.best_value, self.best_epoch = value, epoch
        es = cfg.regularize.early_stopping
        if es.enabled:
            self.es_best, self.bad_epochs = early_stop_update(
                self.es_best, self.bad_epochs, metrics.get(("val", es.metric.removeprefix("val_"))), es
            )
        return improved, value

    def stop_early(self, cfg) -> bool:
        es = cfg.regularize.early_stopping
        return es.enabled and self.bad_epochs >= es.patience


def early_stop_update(best, bad_epochs, value, es_cfg):
    """(best, epochs without an improvement larger than min_delta) after one more epoch."""
    if value is None:
        return best, bad_epochs
    if is_better(es_cfg.metric, value, best, es_cfg.min_delta):
        return value, 0
    return best, bad_epochs + 1


@dataclass
class RunInfo:
    """What any checkpoint of a run needs to be evaluated on its own: config and normalisation."""

    config: str  # ExperimentConfig as JSON
    class_names: list[str]
    mean: list[float]
    std: list[float]


@dataclass
class TrainState:
    """Exactly what a resumable checkpoint holds: the live parts' state dicts plus the loop's progress."""

    progress: Progress
    model: dict
    optimizer: dict
    schedule: dict
    ema: dict | None
    scaler: dict | None
    info: RunInfo

    def to_checkpoint(self) -> dict:
        p, i = self.progress, self.info
        return {
            "epoch": p.epoch,
            "model": self.model,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "ema": self.ema,
            "scaler": self.scaler,
            "optim_name": p.optim_name,
            "base_lr": p.base_lr,
            "best_value": p.best_value,
            "best_epoch": p.best_epoch,
            "bad_epochs": p.bad_epochs,
            "es_best": p.es_best,
            "ema_updates": p.ema_updates,
            "config": i.config,
            "class_names": i.class_names,
            "mean": i.mean,
            "std": i.std,
        }

    @classmethod
    def from_checkpoint(cls, d: dict, optim_name: str, base_lr: float) -> TrainState:
        """`optim_name`/`base_lr`: the config's, for checkpoints that do not record them."""
        progress = Progress(
            optim_name=d.get("optim_name", optim_name),
            base_lr=d.get("base_lr", base_lr),
            epoch=int(d["epoch"]),
            best_value=d.get("best_value"),
            best_epoch=d.get("best_epoch"),
            bad_epochs=d.get("bad_epochs", 0),
            es_best=d.get("es_best"),
            ema_updates=int(d.get("ema_updates", 0)),
        )
        info = RunInfo(d["config"], d["class_names"], d["mean"], d["std"])
        return cls(progress, d["model"], d["optimizer"], d["schedule"], d.get("ema"), d.get("scaler"), info)


def weights_checkpoint(epoch: int, model_state: dict, info: RunInfo) -> dict:
    """A weights-only checkpoint (best.pt): what evaluation needs, nothing to resume from."""
    return {
        "epoch": epoch,
        "model": model_state,
        "config": info.config,
        "class_names": info.class_names,
        "mean": info.mean,
        "std": info.std,
    }
