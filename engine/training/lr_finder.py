"""LR range test: train from the run's initial state while the LR grows exponentially, and read a good LR
off the loss curve (Smith's range test, as popularised by fastai's lr_find).

The run is built by `build_run` (model, optimizer, loss, mixup, AMP, device, data exactly as `train`
builds them) and stepped on the batches `make_train_batches` gives an epoch; only the LR differs: at
step i of n it is start * (end / start) ** (i / (n - 1)) in every param group (times the group's
head/backbone multiplier). The loss is smoothed by a bias-corrected exponential moving average; the
sweep stops when the smoothed loss exceeds `diverge_factor` x its best (or is not finite).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from engine.config import ExperimentConfig
from engine.data import DatasetSpec, normalize_batch
from engine.sinks import EventSink
from engine.training.batches import make_train_batches
from engine.training.hooks import TrainHooks
from engine.training.optim import set_lr
from engine.training.phases import enter_epoch
from engine.training.run import Run, Stopper, build_run
from engine.training.seeding import seed_epoch

RULES = ("valley", "steepest")


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # raw per-step training loss
    smoothed: list[float]
    suggested_lr: float | None
    rule: str  # the rule that gave suggested_lr
    suggestions: dict[str, float | None] = field(default_factory=dict)  # every rule's pick
    diverged: bool = False
    planned_steps: int = 0

    def to_json(self) -> dict:
        """As a dict for json.dumps; a diverged loss (inf/NaN) becomes None, which JSON can hold."""
        d = asdict(self)
        for key in ("losses", "smoothed"):
            d[key] = [v if math.isfinite(v) else None for v in d[key]]
        return d


def lr_at(step: int, steps: int, start_lr: float, end_lr: float) -> float:
    """The exponential sweep: start_lr at step 0, end_lr at step steps - 1."""
    return start_lr * (end_lr / start_lr) ** (step / max(1, steps - 1))


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Exponential moving average with bias correction (the first values are not pulled toward 0)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def steepest(lrs: list[float], smoothed: list[float], skip_start: int = 3) -> float | None:
    """The LR where the smoothed loss falls fastest per decade of LR, before the curve's minimum."""
    stop = int(np.argmin(smoothed)) + 1
    if stop - skip_start < 3:
        return None
    log_lr = np.log10(lrs[skip_start:stop])
    slope = np.gradient(np.asarray(smoothed[skip_start:stop]), log_lr)
    return float(lrs[skip_start + int(np.argmin(slope))])


def valley(lrs: list[float], smoothed: list[float]) -> float | None:
    """Two thirds down the longest stretch of (not necessarily adjacent) falling smoothed loss, as fastai's
    `valley`: an LR well into the descent but short of the minimum, where training is about to become unstable."""
    n = len(smoothed)
    if n < 3:
        return None
    run = [1] * n  # run[i]: length of the longest decreasing subsequence ending at i
    start = list(range(n))
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and run[j] + 1 > run[i]:
                run[i], start[i] = run[j] + 1, start[j]
    end = int(np.argmax(run))
    first = start[end]
    return float(lrs[first + (end - first) * 2 // 3])


def suggest(lrs: list[float], smoothed: list[float]) -> dict[str, float | None]:
    return {"valley": valley(lrs, smoothed), "steepest": steepest(lrs, smoothed)}


def find_lr(
    cfg: ExperimentConfig,
    spec: DatasetSpec,
    *,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    num_steps: int = 300,
    max_epochs: int = 5,
    beta: float = 0.98,
    diverge_factor: float = 4.0,
    rule: str = "valley",
    sink: EventSink | None = None,
) -> LRFinderResult:
    """Sweep the LR over `num_steps` steps (at most `max_epochs` passes over the training split)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule} (choose from {', '.join(RULES)})")
    if not 0 < start_lr < end_lr:
        raise ValueError("need 0 < start_lr < end_lr")
    with tempfile.TemporaryDirectory(prefix="lr_find_") as tmp:  # build_run wants a run directory; nothing is kept
        run = build_run(cfg, spec, tmp, sink or EventSink(), Stopper(), TrainHooks(), None)
        steps = max(2, min(num_steps, max_epochs * run.steps_per_epoch))
        lrs, losses, diverged = _sweep(run, steps, start_lr, end_lr, beta, diverge_factor)
    smoothed = smooth(losses, beta)
    picks = suggest(lrs, smoothed)
    used = rule if picks[rule] is not None else next((r for r in RULES if picks[r] is not None), rule)
    return LRFinderResult(lrs, losses, smoothed, picks[used], used, picks, diverged, steps)


def _sweep(run: Run, steps: int, start_lr: float, end_lr: float, beta: float, diverge_factor: float):
    lrs, losses = [], []
    avg, best, epoch = 0.0, float("inf"), 0
    enter_epoch(run, 0)  # the first epoch's phase: frozen backbone, label smoothing, as training starts
    run.train_model.train()
    while len(lrs) < steps:
        epoch += 1
        seed_epoch(run.cfg.train.seed, epoch)
        for xb, yb in make_train_batches(run.cfg, run.splits, run.cpu_pipeline, epoch, run.device):
            lr = lr_at(len(lrs), steps, start_lr, end_lr)
            set_lr(run.optimizer, lr, 1.0)
            loss = _step(run, xb, yb)
            lrs.append(lr)
            losses.append(loss)
            avg = beta * avg + (1 - beta) * loss
            smoothed = avg / (1 - beta ** len(losses))
            if not np.isfinite(smoothed) or smoothed > diverge_factor * best:
                return lrs, losses, True
            best = min(best, smoothed)
            if len(lrs) >= steps:
                break
    return lrs, losses, False


def _step(run: Run, xb, yb) -> float:
    """One optimizer step on one batch as the training loop takes it (no accumulation: one LR per step)."""
    cfg, device = run.cfg, run.device
    xb = normalize_batch(xb.to(device, non_blocking=True), run.splits.mean, run.splits.std, cfg.train.channels_last)
    yb = yb.to(device, non_blocking=True)
    targets = yb
    if run.mixup is not None and len(yb) % 2 == 0:
        xb, targets = run.mixup(xb, yb)
    with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        loss = run.loss_fn(run.train_model(xb), targets)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.optim.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return float(loss.detach())
