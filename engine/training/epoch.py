"""One training epoch and one validation pass."""

from __future__ import annotations

import time

import torch

from engine.data import normalize_batch
from engine.training.batches import make_train_batches
from engine.training.evaluate import eval_batch_size, predict_probs, summarize
from engine.training.live import batches as eval_batches
from engine.training.optim import set_lr
from engine.training.run import Run, StopRequested, TrainingFailed

STOP_CHECK_EVERY = 20  # steps, under DDP


class NonFiniteWatch:
    """The first step with a non-finite loss, noted on the device and read back where a sync costs nothing:
    every step on CPU, at the heartbeat and the epoch's end on CUDA (a per-step .item() would stall the GPU)."""

    def __init__(self, device: torch.device, epoch: int):
        self.epoch, self.every_step = epoch, device.type == "cpu"
        self.step = torch.zeros((), dtype=torch.long, device=device)  # 1-based; 0: none yet
        self.loss = torch.zeros((), device=device)

    def note(self, step: int, loss: torch.Tensor) -> None:
        first_bad = ~torch.isfinite(loss.detach()) & (self.step == 0)
        self.step = torch.where(first_bad, step + 1, self.step)
        self.loss = torch.where(first_bad, loss.detach().float(), self.loss)
        if self.every_step:
            self.check()

    def check(self) -> None:
        step = int(self.step)
        if step:
            raise TrainingFailed(
                f"loss became {float(self.loss)} at epoch {self.epoch}, step {step}: "
                "lower optim.lr or enable grad clipping"
            )


def accumulation_divisor(step: int, accumulate: int, steps_per_epoch: int) -> int:
    """Micro-batches in the accumulation group of `step`: the last group of an epoch may be shorter, and
    its gradient is still the mean over its own micro-batches."""
    group_start = step - step % accumulate
    return min(accumulate, steps_per_epoch - group_start)


def train_one_epoch(run: Run, epoch_idx: int, lr: float, use_mixup: bool) -> dict[tuple[str, str], float]:
    """Train 0-based `epoch_idx`; returns its ("train", ...) metrics (summed over ranks under DDP)."""
    device, steps = run.device, run.steps_per_epoch
    run.train_model.train()
    batches = make_train_batches(run.cfg, run.splits, run.cpu_pipeline, epoch_idx + 1, device)
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)  # metrics stay on the device: one sync per epoch, not per step
    correct = torch.zeros((), device=device)
    seen, step, data_wait = 0, 0, 0.0
    nonfinite = NonFiniteWatch(device, epoch_idx + 1)
    run.optimizer.zero_grad(set_to_none=True)
    run.live.phase("train", steps, epoch=epoch_idx + 1)
    ranks = run.dist.world if run.dist.enabled else 1
    tw = time.perf_counter()
    for xb, yb in batches:
        data_wait += time.perf_counter() - tw
        loss, logits, yb = _train_step(run, xb, yb, step, epoch_idx * steps + step, use_mixup, nonfinite)
        if run.cfg.schedule.name == "onecycle":
            lr = set_lr(run.optimizer, run.progress.base_lr, run.schedule.factor(epoch_idx, step + 1))
        loss_sum += loss.detach().float() * len(yb)
        correct += (logits.detach().argmax(1) == yb).sum()
        seen += len(yb)
        step += 1
        run.live.advance(len(yb) * ranks)
        _between_steps(run, step, nonfinite)
        run.hooks.after_step(epoch_idx * steps + step - 1)
        if step >= steps:
            break
        tw = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    nonfinite.check()
    if run.dist.enabled:
        loss_sum, correct, seen_t = run.dist.sum(loss_sum, correct, torch.tensor(float(seen), device=device))
        seen = int(seen_t.item())
    return {
        ("train", "loss"): float(loss_sum) / max(seen, 1),
        ("train", "acc"): float(correct) / max(seen, 1),
        ("train", "lr"): lr,
        ("train", "epoch_seconds"): seconds,
        ("train", "images_per_sec"): seen / max(seconds, 1e-9),
        ("train", "data_wait"): data_wait / max(seconds, 1e-9),
    }


def _train_step(run: Run, xb, yb, step: int, run_step: int, use_mixup: bool, nonfinite: NonFiniteWatch):
    """Forward, backward and (at the end of an accumulation group) the optimizer step; returns
    (loss, logits, this rank's labels)."""
    cfg, device = run.cfg, run.device
    xb, yb = run.dist.shard(xb, yb)  # every rank built the same global batch; train on our slice
    xb = normalize_batch(xb.to(device, non_blocking=True), run.splits.mean, run.splits.std, cfg.train.channels_last)
    yb = yb.to(device, non_blocking=True)
    targets = yb
    if use_mixup and len(yb) % 2 == 0:
        xb, targets = run.mixup(xb, yb)
    with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        logits = run.train_model(xb)
        loss = run.loss_fn(logits, targets)
    loss = run.hooks.on_loss(run_step, loss)
    nonfinite.note(step, loss)
    accumulate, steps = cfg.optim.accumulate, run.steps_per_epoch
    run.scaler.scale(loss / accumulation_divisor(step, accumulate, steps)).backward()
    if (step + 1) % accumulate == 0 or step + 1 == steps:
        _optimizer_step(run)
    return loss, logits, yb


def _optimizer_step(run: Run) -> None:
    if run.cfg.optim.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.optim.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.progress.ema_updates += 1
        # the step drives timm's warmup; without warmup the decay is the configured one from the first update
        run.ema.update(run.model, step=run.progress.ema_updates if run.cfg.regularize.ema.warmup else None)


def _between_steps(run: Run, step: int, nonfinite: NonFiniteWatch) -> None:
    """Stop requests and the heartbeat. Under DDP every rank must agree to stop at the same step; agreeing
    costs a sync, so ranks compare notes every STOP_CHECK_EVERY steps (a stop waits at most that long)."""
    dist = run.dist
    if (
        run.stopper.requested
        if not dist.enabled
        else step % STOP_CHECK_EVERY == 0 and dist.any(run.stopper.requested, run.device)
    ):
        raise StopRequested
    if run.beat.due():
        nonfinite.check()
        if run.sink.heartbeat():
            raise StopRequested


def validate(run: Run) -> tuple[dict[tuple[str, str], float], dict[str, list], torch.Tensor | None]:
    """("val", loss/acc) metrics, the confusion matrix and the class probabilities of the evaluated model;
    empty (and None) without a val split."""
    s = run.splits
    if not len(s.val_y):
        return {}, {}, None
    run.live.phase("val", eval_batches(len(s.val_y), eval_batch_size(run.device)) * (2 if run.ema is not None else 1))

    def predict(model):
        return predict_probs(
            model,
            s.val_x,
            s.mean,
            s.std,
            run.device,
            channels_last=run.cfg.train.channels_last,
            amp_dtype=run.amp_dtype,
            on_batch=run.live.advance,
        )

    probs = predict(run.eval_model)
    v = summarize(probs, s.val_y, s.num_classes, with_predictions=False)
    metrics = {("val", "loss"): v["loss"], ("val", "acc"): v["accuracy"]}
    if run.ema is not None:  # the other weights beside the evaluated ones: acc_raw next to the EMA's, or acc_ema
        evaluates_ema = run.cfg.regularize.ema.evaluate_ema
        other = run.model if evaluates_ema else run.ema.module
        suffix = "raw" if evaluates_ema else "ema"
        o = summarize(predict(other), s.val_y, s.num_classes, with_predictions=False)
        metrics[("val", f"loss_{suffix}")], metrics[("val", f"acc_{suffix}")] = o["loss"], o["accuracy"]
    return metrics, {"val": v["confusion"]}, probs
