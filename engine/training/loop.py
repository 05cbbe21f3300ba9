"""The training loop: one flat function you can read top to bottom.

Reproducibility: every epoch re-seeds torch/numpy/random/albumentations from (seed, epoch), and
`last.pt` holds model, optimizer, schedule, EMA and early-stopping state after each epoch, so a
stopped or killed run resumed from its last checkpoint repeats exactly what the uninterrupted run
would have done (on CPU).
"""

from __future__ import annotations

import os
import random
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.augment import build_pipeline, seed_pipeline
from engine.config import ExperimentConfig
from engine.data import DatasetSpec, Splits, load_arrays, make_splits, normalize_batch
from engine.models import build_model, set_frozen
from engine.sinks import EventSink
from engine.training import checkpoint as ckpt
from engine.training import distributed
from engine.training.evaluate import predict_probs, run_tta, summarize
from engine.training.losses import build_loss, smoothing_at
from engine.training.optim import EpochSchedule, build_optimizer, set_lr

HEARTBEAT_EVERY_S = 2.0
STOP_CHECK_EVERY = 20  # steps, under DDP


class TrainingFailed(RuntimeError):
    """A run that cannot go on (NaN loss, ...), with a short reason for the user."""


class StopRequested(Exception):
    pass


@dataclass
class RunResult:
    status: str
    epochs_done: int
    best_epoch: int | None
    best_value: float | None
    test_accuracy: float | None


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % 2**31


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingFailed("train.device is cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


class _Stopper:
    """SIGTERM/SIGINT -> finish the current step, keep finished epochs, end as 'stopped'."""

    def __init__(self):
        self.requested = False

    def install(self):
        def handler(signum, frame):
            self.requested = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not in the main thread (tests calling train() directly)
                pass
        return self


def batches_in_memory(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int, drop_last: bool):
    n = len(y)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def make_train_batches(cfg: ExperimentConfig, splits: Splits, pipeline, epoch: int, device):
    """(uint8 NHWC, int64 labels) batches for one epoch. Which path runs, and why, is
    `fastpath.plan(...).describe()`, recorded once per run.

    The GPU-resident fast path (engine.training.fastpath) is used when it applies; otherwise the CPU path:
    per-image albumentations in a DataLoader (workers, pinned memory), or plain array slicing
    when there is no augmentation at all.
    """
    from engine.training import fastpath

    seed = epoch_seed(cfg.train.seed, epoch)
    drop_last = len(splits.train_y) > cfg.train.batch_size
    fast = fastpath.plan(cfg, splits, device)
    if fast.usable:
        return fast.batches(epoch, seed)
    if pipeline is None:
        return batches_in_memory(splits.train_x, splits.train_y, cfg.train.batch_size, True, seed, drop_last)
    from torch.utils.data import DataLoader

    from engine.data import AugmentedArrays

    seed_pipeline(pipeline, seed)
    workers = cfg.train.num_workers
    loader = DataLoader(
        AugmentedArrays(splits.train_x, splits.train_y, pipeline),
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker if workers else None,
    )
    return iter(loader)


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**31
    random.seed(s)
    np.random.seed(s)
    info = torch.utils.data.get_worker_info()
    seed_pipeline(info.dataset.pipeline, s)


def _ema(model, cfg):
    if not cfg.regularize.ema.enabled:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.regularize.ema.decay)


def _mixup(cfg, num_classes):
    m = cfg.augment.mixup
    if not m.enabled:
        return None
    from timm.data import Mixup

    # Smoothing is applied by our loss (possibly scheduled), so timm's mixup gets none.
    return Mixup(
        mixup_alpha=m.mixup_alpha,
        cutmix_alpha=m.cutmix_alpha,
        prob=m.prob,
        switch_prob=m.switch_prob,
        mode="batch",
        label_smoothing=0.0,
        num_classes=num_classes,
    )


def mixup_active(cfg, epoch_idx: int) -> bool:
    """Mixup/CutMix is on for 0-based epochs before augment.mixup.stop_epoch (seed 004 stopped it late in training)."""
    m = cfg.augment.mixup
    return m.enabled and (m.stop_epoch is None or epoch_idx < m.stop_epoch)


def accumulation_divisor(step: int, accumulate: int, steps_per_epoch: int) -> int:
    """Micro-batches in the accumulation group of `step`: the last group of an epoch may be shorter, and
    its gradient is still the mean over its own micro-batches."""
    group_start = step - step % accumulate
    return min(accumulate, steps_per_epoch - group_start)


def train(
    cfg: ExperimentConfig,
    spec: DatasetSpec,
    run_dir: str | Path,
    sink: EventSink,
    *,
    resume: bool = False,
    init_state: dict | None = None,
    _fault: dict | None = None,
) -> RunResult:
    """Train one run. Reports through `sink`; ends with a status: completed | stopped | failed."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stopper = _Stopper().install()
    if not distributed.world_from_env().is_main:
        sink = EventSink()  # under torchrun only rank 0 writes to the DB
    try:
        return _train(cfg, spec, run_dir, sink, stopper, resume, init_state, _fault or {})
    except StopRequested:
        sink.on_status("stopped")
        return RunResult("stopped", -1, None, None, None)
    except Exception as exc:
        short = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            short = "CUDA out of memory: lower train.batch_size or the image size"
        sink.on_status(
            "failed",
            error=f"{type(exc).__name__}: {short}" if not isinstance(exc, TrainingFailed) else short,
            traceback=traceback.format_exc(),
        )
        return RunResult("failed", -1, None, None, None)


def _train(cfg, spec, run_dir, sink, stopper, resume, init_state, fault) -> RunResult:
    t = cfg.train
    device = pick_device(t.device)
    dist, device = distributed.setup(device)
    seed_everything(t.seed, t.deterministic)
    amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp] if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not t.deterministic

    data = load_arrays(spec)
    splits = make_splits(data, cfg.data)
    if len(splits.train_y) < 1 or len(splits.val_y) < 1 and not cfg.data.train_on_val and cfg.data.val_fraction > 0:
        raise TrainingFailed("the training or validation split is empty; lower data.val_fraction")
    num_classes = splits.num_classes
    pipeline = build_pipeline(cfg.augment.train, splits.image_size)
    eval_pipeline = pipeline  # random-pass TTA uses the training augmentation

    model = build_model(cfg.model, splits.channels, num_classes)
    if init_state is not None:  # fine-tune / continue from another run's checkpoint
        _load_compatible(model, init_state["model"], sink)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, num_classes, splits.train_y).to(device)
    mixup = _mixup(cfg, num_classes)
    ema = _ema(model, cfg)

    steps_per_epoch = max(1, len(splits.train_y) // t.batch_size if len(splits.train_y) > t.batch_size else 1)
    if t.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
    optim_name, base_lr = cfg.optim.name, cfg.optim.lr
    optimizer = build_optimizer(cfg.optim, model, cfg.model.backbone_lr_mult)
    schedule = EpochSchedule(cfg.schedule, t.epochs, steps_per_epoch).attach(base_lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    train_model = distributed.wrap(model, dist, device, t.sync_bn)  # DDP when under torchrun
    train_model = torch.compile(train_model) if t.compile else train_model

    start_epoch, best_value, best_epoch, bad_epochs, es_best = 0, None, None, 0, None
    if resume:
        state = ckpt.load_resume_point(run_dir, log=sink.on_log)
        if state is not None:
            start_epoch = int(state["epoch"])
            if state.get("optim_name", optim_name) != optim_name:
                optim_name, base_lr = state["optim_name"], state["base_lr"]
                optimizer = build_optimizer(cfg.optim, model, cfg.model.backbone_lr_mult, optim_name, base_lr)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            if ema is not None and state.get("ema") is not None:
                ema.module.load_state_dict(state["ema"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            best_value, best_epoch = state.get("best_value"), state.get("best_epoch")
            bad_epochs, es_best = state.get("bad_epochs", 0), state.get("es_best")
            sink.on_log(f"resuming after epoch {start_epoch}")
        else:
            sink.on_log("no readable checkpoint: starting from epoch 1")
        sink.on_resume(start_epoch)

    from engine.training import fastpath

    data_path = fastpath.plan(cfg, splits, device).describe()
    sink.on_status(
        "running",
        pid=os.getpid(),
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        data_path=data_path,
    )
    sink.on_log(
        f"{len(splits.train_y)} train / {len(splits.val_y)} val / {len(splits.test_y)} test images, "
        f"{num_classes} classes, {splits.image_size}x{splits.image_size}x{splits.channels}; data path: {data_path}"
        + (f"; DistributedDataParallel over {dist.world} processes" if dist.enabled else "")
    )
    last_beat = time.monotonic()
    best_metric = cfg.eval.best_metric
    epoch = start_epoch  # a run resumed after its last epoch (lost during the test evaluation) only evaluates
    for epoch_idx in range(start_epoch, t.epochs):
        epoch = epoch_idx + 1
        es = epoch_seed(t.seed, epoch)
        random.seed(es)
        np.random.seed(es)
        torch.manual_seed(es)

        # --- phase switches: freezing, Adam -> SGD
        if (
            cfg.model.freeze.epochs or cfg.model.freeze.unfreeze_last is not None
        ):  # no frozen epochs: last N from the start
            set_frozen(model, epoch_idx < cfg.model.freeze.epochs, cfg.model.freeze.unfreeze_last)
        if (
            cfg.optim.switch_to_sgd_epoch is not None
            and epoch_idx == cfg.optim.switch_to_sgd_epoch
            and optim_name != "sgd"
        ):
            optim_name, base_lr = "sgd", cfg.optim.sgd_lr or cfg.optim.lr
            optimizer = build_optimizer(cfg.optim, model, cfg.model.backbone_lr_mult, "sgd", base_lr)
            schedule.attach(base_lr)
            sink.on_log(f"epoch {epoch}: switched optimizer to SGD, lr {base_lr}")
        lr = set_lr(optimizer, base_lr, schedule.factor(epoch_idx))
        loss_fn.smoothing = smoothing_at(cfg.loss, epoch_idx, t.epochs)
        use_mixup = mixup is not None and mixup_active(cfg, epoch_idx)

        # --- train one epoch
        train_model.train()
        batches = make_train_batches(cfg, splits, pipeline, epoch, device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen, step, data_wait = 0, 0, 0.0
        bad_step = torch.zeros((), dtype=torch.long, device=device)  # first step with a non-finite loss (0: none)
        bad_loss = torch.zeros((), device=device)
        optimizer.zero_grad(set_to_none=True)
        tw = time.perf_counter()
        for xb, yb in batches:
            data_wait += time.perf_counter() - tw
            xb, yb = dist.shard(xb, yb)  # every rank built the same global batch; train on our slice
            xb = normalize_batch(xb.to(device, non_blocking=True), splits.mean, splits.std, t.channels_last)
            yb = yb.to(device, non_blocking=True)
            targets = yb
            if use_mixup and len(yb) % 2 == 0:
                xb, targets = mixup(xb, yb)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = train_model(xb)
                loss = loss_fn(logits, targets)
            if fault.get("nan_at_step") is not None and step + epoch_idx * steps_per_epoch >= fault["nan_at_step"]:
                loss = loss * float("nan")
            # A non-finite loss is noted on the device and read back where a sync costs nothing: every step
            # on CPU, at the heartbeat and the epoch's end on CUDA (a per-step .item() would stall the GPU).
            first_bad = ~torch.isfinite(loss.detach()) & (bad_step == 0)
            bad_step = torch.where(first_bad, step + 1, bad_step)
            bad_loss = torch.where(first_bad, loss.detach().float(), bad_loss)
            if device.type == "cpu":
                _raise_if_nonfinite(bad_step, bad_loss, epoch)
            scaler.scale(loss / accumulation_divisor(step, cfg.optim.accumulate, steps_per_epoch)).backward()
            if (step + 1) % cfg.optim.accumulate == 0 or step + 1 == steps_per_epoch:
                if cfg.optim.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
            if cfg.schedule.name == "onecycle":
                lr = set_lr(optimizer, base_lr, schedule.factor(epoch_idx, step + 1))
            # metrics stay on the device: one sync per epoch, not per step
            loss_sum += loss.detach().float() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
            step += 1
            # Under DDP every rank must agree to stop at the same step; agreeing costs a sync, so
            # ranks compare notes every STOP_CHECK_EVERY steps (a stop waits at most that long).
            if (
                stopper.requested
                if not dist.enabled
                else step % STOP_CHECK_EVERY == 0 and dist.any(stopper.requested, device)
            ):
                raise StopRequested
            if time.monotonic() - last_beat > HEARTBEAT_EVERY_S:
                last_beat = time.monotonic()
                _raise_if_nonfinite(bad_step, bad_loss, epoch)
                if sink.heartbeat():
                    raise StopRequested
            if fault.get("sleep_per_step"):
                time.sleep(fault["sleep_per_step"])
            if step >= steps_per_epoch:
                break
            tw = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t0
        _raise_if_nonfinite(bad_step, bad_loss, epoch)
        if dist.enabled:
            loss_sum, correct, seen_t = dist.sum(loss_sum, correct, torch.tensor(float(seen), device=device))
            seen = int(seen_t.item())

        # --- validate (EMA weights when asked)
        eval_model = ema.module if (ema is not None and cfg.regularize.ema.evaluate_ema) else model
        metrics = {
            ("train", "loss"): float(loss_sum) / max(seen, 1),
            ("train", "acc"): float(correct) / max(seen, 1),
            ("train", "lr"): lr,
            ("train", "epoch_seconds"): train_seconds,
            ("train", "images_per_sec"): seen / max(train_seconds, 1e-9),
            ("train", "data_wait"): data_wait / max(train_seconds, 1e-9),
        }
        confusion = {}
        if len(splits.val_y):
            v = summarize(
                predict_probs(
                    eval_model,
                    splits.val_x,
                    splits.mean,
                    splits.std,
                    device,
                    channels_last=t.channels_last,
                    amp_dtype=amp_dtype,
                ),
                splits.val_y,
                num_classes,
                with_predictions=False,
            )
            metrics[("val", "loss")], metrics[("val", "acc")] = v["loss"], v["accuracy"]
            confusion["val"] = v["confusion"]
        schedule.observe({"val_loss": metrics.get(("val", "loss")), "val_acc": metrics.get(("val", "acc"))})

        # --- best / early stopping bookkeeping
        key = ("val", best_metric.removeprefix("val_"))
        value = metrics.get(key, metrics[("train", best_metric.removeprefix("val_"))])
        improved = best_value is None or (value < best_value if key[1] == "loss" else value > best_value)
        es_cfg = cfg.regularize.early_stopping
        if improved:
            best_value, best_epoch = value, epoch
        if es_cfg.enabled:
            es_best, bad_epochs = early_stop_update(
                es_best, bad_epochs, metrics.get(("val", es_cfg.metric.removeprefix("val_"))), es_cfg
            )

        # --- checkpoint first, then rows: a row in the DB always has a checkpoint to resume from
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "optim_name": optim_name,
            "base_lr": base_lr,
            "best_value": best_value,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "es_best": es_best,
            "config": cfg.to_json(),
            "class_names": splits.class_names,
            "mean": splits.mean,
            "std": splits.std,
        }
        if dist.is_main:  # one writer: under torchrun the other ranks hold identical weights
            ckpt.save_atomic(state, run_dir / "last.pt")
            sink.on_checkpoint(epoch, "last", str(run_dir / "last.pt"))
            if improved:
                ckpt.save_atomic(_weights_only(state, eval_model), run_dir / "best.pt")
                sink.on_checkpoint(epoch, "best", str(run_dir / "best.pt"), best_metric, value)
            if epoch % t.checkpoint_every == 0 or epoch == t.epochs:
                ckpt.save_atomic(state, ckpt.epoch_path(run_dir, epoch))
                sink.on_checkpoint(epoch, "epoch", str(ckpt.epoch_path(run_dir, epoch)), best_metric, value)
                for removed in ckpt.prune(run_dir, t.keep_last):
                    sink.on_checkpoint_removed(str(removed))
        sink.on_epoch_end(epoch, metrics, confusion)
        last_beat = time.monotonic()
        if fault.get("crash_after_epoch") == epoch:
            raise RuntimeError(f"injected crash after epoch {epoch}")
        if dist.any(stopper.requested, device):
            raise StopRequested
        if es_cfg.enabled and bad_epochs >= es_cfg.patience:
            sink.on_log(
                f"early stopping after epoch {epoch}: no improvement of {es_cfg.metric} for {bad_epochs} epochs"
            )
            break

    # --- final evaluation on the test split
    test_acc = None
    if dist.is_main:
        test_acc = _final_evaluation(cfg, splits, model, ema, run_dir, device, amp_dtype, eval_pipeline, sink)
    dist.barrier()
    dist.close()
    sink.on_status("completed")
    return RunResult("completed", epoch if t.epochs else 0, best_epoch, best_value, test_acc)


def _raise_if_nonfinite(bad_step: torch.Tensor, bad_loss: torch.Tensor, epoch: int) -> None:
    step = int(bad_step)
    if step:
        raise TrainingFailed(
            f"loss became {float(bad_loss)} at epoch {epoch}, step {step}: lower optim.lr or enable grad clipping"
        )


def early_stop_update(best, bad_epochs, value, es_cfg):
    """(best, epochs without an improvement larger than min_delta) after one more epoch."""
    if value is None:
        return best, bad_epochs
    lower = es_cfg.metric == "val_loss"
    if best is None or ((best - value) if lower else (value - best)) > es_cfg.min_delta:
        return value, 0
    return best, bad_epochs + 1


def _weights_only(state: dict, eval_model) -> dict:
    return {
        "epoch": state["epoch"],
        "model": eval_model.state_dict(),
        "config": state["config"],
        "class_names": state["class_names"],
        "mean": state["mean"],
        "std": state["std"],
    }


def _load_compatible(model, state_dict, sink) -> None:
    own = model.state_dict()
    usable = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    skipped = len(own) - len(usable)
    sink.on_log(
        f"initialised from parent checkpoint: {len(usable)} tensors loaded, {skipped} kept fresh (shape changed)"
    )


def _final_evaluation(cfg, splits, model, ema, run_dir, device, amp_dtype, pipeline, sink) -> float:
    which = cfg.eval.test_checkpoint
    eval_model = ema.module if (ema is not None and cfg.regularize.ema.evaluate_ema) else model
    epoch = None
    if which == "best" and (run_dir / "best.pt").exists():
        state = ckpt.load(run_dir / "best.pt")
        eval_model.load_state_dict(state["model"])
        epoch = state["epoch"]
    if epoch is None:
        epoch = ckpt.load(run_dir / "last.pt")["epoch"]
    t = cfg.train
    probs = predict_probs(
        eval_model, splits.test_x, splits.mean, splits.std, device, channels_last=t.channels_last, amp_dtype=amp_dtype
    )
    result = summarize(probs, splits.test_y, splits.num_classes)
    sink.on_evaluation("test", epoch, which, result)
    if len(splits.val_y):
        val = summarize(
            predict_probs(
                eval_model,
                splits.val_x,
                splits.mean,
                splits.std,
                device,
                channels_last=t.channels_last,
                amp_dtype=amp_dtype,
            ),
            splits.val_y,
            splits.num_classes,
        )
        sink.on_evaluation("val", epoch, which, val)
    if cfg.eval.tta:
        tta = run_tta(
            eval_model,
            splits.test_x,
            splits.test_y,
            splits.num_classes,
            cfg.eval.tta,
            splits.mean,
            splits.std,
            device,
            passes=cfg.eval.tta_passes,
            pipeline=pipeline,
            seed=cfg.train.seed,
            channels_last=t.channels_last,
            amp_dtype=amp_dtype,
        )
        sink.on_tta("test", which, tta)
    return result["accuracy"]


def evaluate_checkpoint(
    path: str | Path, spec: DatasetSpec, split: str = "test", device_name: str = "auto", tta: list[str] | None = None
) -> tuple[dict, dict | None, int]:
    """Evaluate any stored checkpoint on a split (seed 002 found its best test score at epoch 46)."""
    state = ckpt.load(path)
    cfg = ExperimentConfig.model_validate_json(state["config"])
    device = pick_device(device_name)
    splits = make_splits(load_arrays(spec), cfg.data)
    # the checkpoint holds the weights: build the bare architecture (no download of pretrained weights)
    model = build_model(cfg.model.model_copy(update={"pretrained": False}), splits.channels, splits.num_classes)
    ema_weights = state.get("ema") if cfg.regularize.ema.evaluate_ema else None  # epoch/last checkpoints keep both
    model.load_state_dict(ema_weights if ema_weights is not None else state["model"])
    model.to(device)
    x, y = (splits.test_x, splits.test_y) if split == "test" else (splits.val_x, splits.val_y)
    result = summarize(predict_probs(model, x, state["mean"], state["std"], device), y, splits.num_classes)
    tta_results = None
    if tta:
        pipeline = build_pipeline(cfg.augment.train, splits.image_size)
        tta_results = run_tta(
            model,
            x,
            y,
            splits.num_classes,
            tta,
            state["mean"],
            state["std"],
            device,
            passes=cfg.eval.tta_passes,
            pipeline=pipeline,
            seed=cfg.train.seed,
        )
    return result, tta_results, int(state["epoch"])


def lr_trajectory(cfg: ExperimentConfig, steps_per_epoch: int = 1) -> list[float]:
    """The LR each epoch would use, without training (for the builder's preview and tests)."""
    sched = EpochSchedule(cfg.schedule, cfg.train.epochs, steps_per_epoch).attach(cfg.optim.lr)
    return [cfg.optim.lr * sched.factor(e) for e in range(cfg.train.epochs)]
