"""The training loop, read top to bottom in train(); each step of an epoch is a named function.

Reproducibility: every epoch re-seeds torch/numpy/random/albumentations from (seed, epoch), and
`last.pt` holds model, optimizer, schedule, EMA and early-stopping state after each epoch, so a
stopped or killed run resumed from its last checkpoint repeats exactly what the uninterrupted run
would have done (on CPU).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from engine import image_history, startup
from engine.config import ExperimentConfig
from engine.data import DatasetSpec
from engine.fileio import NoSpaceLeft, is_no_space, no_space_message
from engine.sinks import EventSink, RunTakenOver
from engine.training import checkpoint as ckpt
from engine.training import distributed
from engine.training.epoch import train_one_epoch, validate
from engine.training.final_eval import evaluate_checkpoint, final_evaluation
from engine.training.hooks import TrainHooks
from engine.training.optim import build_schedule
from engine.training.phases import enter_epoch
from engine.training.run import (
    Run,
    Stopper,
    StopRequested,
    TrainingFailed,
    build_mixup,
    build_run,
    continue_from,
    ema_fact,
    thread_count,
)
from engine.training.seeding import seed_epoch
from engine.training.state import TrainState, weights_checkpoint

__all__ = ["RunResult", "StopRequested", "TrainingFailed", "evaluate_checkpoint", "lr_trajectory", "train"]
_mixup = build_mixup  # the dashboard's augmentation preview mixes batches as training does


@dataclass
class RunResult:
    status: str
    epochs_done: int
    best_epoch: int | None
    best_value: float | None
    test_accuracy: float | None


def train(
    cfg: ExperimentConfig,
    spec: DatasetSpec,
    run_dir: str | Path,
    sink: EventSink,
    *,
    resume: bool = False,
    init_state: dict | None = None,
    hooks: TrainHooks | None = None,
    loaded: tuple | None = None,
) -> RunResult:
    """Train one run. Reports through `sink`; ends with a status: completed | stopped | failed.
    loaded: (ImageArrays, Splits) this process already made of `spec` for `cfg` (else loaded here)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stopper = Stopper().install()
    if not distributed.world_from_env().is_main:
        sink = EventSink()  # under torchrun only rank 0 writes to the DB
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(thread_count(cfg.train.threads))
        run = build_run(cfg, spec, run_dir, sink, stopper, hooks or TrainHooks(), init_state, loaded)
        if init_state is not None and cfg.train.init_mode == "continue":
            continue_from(run, init_state)  # a resume below replaces it with this run's own state
        if resume:
            _resume(run)
        _announce(run)
        startup.resume()  # start-up is over: the collector runs during the epochs
        return _train(run)
    except StopRequested:
        sink.on_status("stopped")
        return RunResult("stopped", -1, None, None, None)
    except RunTakenOver as exc:  # frozen, marked lost, and the run went on without us: write nothing more
        sink.on_log(f"{exc}; exiting without writing anything more")
        return RunResult("lost", -1, None, None, None)
    except Exception as exc:
        short = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            short = "CUDA out of memory: lower train.batch_size or the image size"
        elif is_no_space(exc) and not isinstance(exc, NoSpaceLeft):  # e.g. the log on a full disk
            short = no_space_message(Path(exc.filename).parent if getattr(exc, "filename", None) else run_dir)
        plain = isinstance(exc, (TrainingFailed, ckpt.NoResumePoint)) or is_no_space(exc)
        try:
            sink.on_status(
                "failed", error=short if plain else f"{type(exc).__name__}: {short}", traceback=traceback.format_exc()
            )
        except OSError as again:  # the console's log on that same full disk: the DB sink, first in line, has it
            if not is_no_space(again):
                raise
        return RunResult("failed", -1, None, None, None)
    finally:
        startup.resume()  # also when start-up failed
        torch.set_num_threads(threads_before)  # callers in this process (tests, notebooks) keep their own


def _train(run: Run) -> RunResult:
    cfg, sink, dist, progress = run.cfg, run.sink, run.dist, run.progress
    for epoch_idx in range(progress.epoch, cfg.train.epochs):  # a run resumed after its last epoch only evaluates
        epoch = epoch_idx + 1
        seed_epoch(cfg.train.seed, epoch)
        phase = enter_epoch(run, epoch_idx)
        metrics = train_one_epoch(run, epoch_idx, phase.lr, phase.mixup)
        val_metrics, confusion, val_probs = validate(run)
        metrics.update(val_metrics)
        observed = {"val_loss": metrics.get(("val", "loss")), "val_acc": metrics.get(("val", "acc"))}
        run.schedule.observe(observed)
        if cfg.loss.smoothing_end is not None:  # a smoothing schedule: its value each epoch, and its plateau
            metrics[("train", "label_smoothing")] = run.loss_fn.smoothing
            run.smoothing.observe(observed)
        improved, value = run.progress.record(epoch, metrics, cfg)
        run.keep_val_probs(epoch, val_probs)
        # First the epoch's rows, then its checkpoints. A process killed between the two resumes from the
        # previous checkpoint, whose resume drops the rows of later epochs and trains this one again: the
        # rows and the checkpoint always agree. (The other order lost the epoch's rows for good.)
        stop = _epoch_rows(run, epoch, metrics, confusion, val_probs)
        if dist.is_main:  # one writer: under torchrun the other ranks hold identical weights
            _save_checkpoints(run, improved, value)
        if stop is not None:
            raise stop
        run.beat.reset()
        run.hooks.after_epoch(epoch)
        if dist.any(run.stopper.requested, run.device):
            raise StopRequested
        if run.progress.stop_early(cfg):
            es = cfg.regularize.early_stopping
            sink.on_log(
                f"early stopping after epoch {epoch}: no improvement of {es.metric} for {run.progress.bad_epochs} epochs"
            )
            break
    test_acc = final_evaluation(run) if dist.is_main else None
    dist.barrier()
    dist.close()
    sink.on_status("completed")
    p = run.progress
    return RunResult("completed", p.epoch, p.best_epoch, p.best_value, test_acc)


def _epoch_rows(run: Run, epoch: int, metrics: dict, confusion: dict, val_probs=None) -> StopRequested | None:
    """Report the finished epoch: first every validation image's prediction (the per-image history, which
    the DB sink writes in the epoch's own transaction), then its metrics. A sink may answer with a stop (a
    study's pruner does): the epoch still gets its checkpoints before the run stops, so a pruned run
    resumes like a stopped one."""
    if val_probs is not None and val_probs.shape[1] <= image_history.MAX_CLASSES:
        pred, conf = image_history.from_probs(val_probs)
        run.sink.on_predictions(epoch, "val", pred, conf)
    try:
        run.sink.on_epoch_end(epoch, metrics, confusion)
    except StopRequested as stop:
        return stop
    return None


def _resume(run: Run) -> None:
    for tmp in ckpt.remove_temporaries(run.run_dir):
        run.sink.on_log(f"removed {tmp.name}, left by an engine killed while saving")
    state = ckpt.load_resume_point(run.run_dir, log=run.sink.on_log)  # NoResumePoint: refused, nothing changed
    if state is None:
        run.sink.on_log("no checkpoint yet: starting from epoch 1")
    else:
        run.restore(TrainState.from_checkpoint(state, run.cfg.optim.name, run.cfg.optim.lr))
        run.sink.on_log(f"resuming after epoch {run.progress.epoch}")
    run.sink.on_resume(run.progress.epoch)


def _announce(run: Run) -> None:
    from engine.training import fastpath

    s, device = run.splits, run.device
    data_path = fastpath.plan(run.cfg, s, device).describe()
    run.sink.on_status(
        "running",
        pid=os.getpid(),
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        data_path=data_path,
        threads=run.threads,
    )
    precision = {None: "float32", torch.bfloat16: "bfloat16 autocast", torch.float16: "float16 autocast"}[run.amp_dtype]
    if run.amp_dtype is None and run.cfg.train.amp != "off":
        need = "CUDA" if run.cfg.train.amp == "fp16" else "CUDA or a CPU with native bfloat16"
        precision += f" (train.amp {run.cfg.train.amp} needs {need})"
    run.sink.on_log(
        f"{len(s.train_y)} train / {len(s.val_y)} val / {len(s.test_y)} test images, "
        f"{s.num_classes} classes, {s.image_size}x{s.image_size}x{s.channels}; CPU threads: {run.threads}; "
        f"precision: {precision}; data path: {data_path}"
        + (f"; DistributedDataParallel over {run.dist.world} processes" if run.dist.enabled else "")
    )
    _announce_ema(run)
    run.beat.reset()


def _announce_ema(run: Run) -> None:
    """The EMA's planned updates against its horizon, as a run fact; a warning in the log when too few."""
    t = run.cfg.train
    updates_per_epoch = -(-run.steps_per_epoch // run.cfg.optim.accumulate)  # optimizer steps (ceil)
    fact = ema_fact(run.cfg, t.epochs * updates_per_epoch)
    if fact is None:
        return
    run.sink.on_facts({"ema": fact})
    if "warning" in fact:
        run.sink.on_log("warning: " + fact["warning"])


def _save_checkpoints(run: Run, improved: bool, value: float) -> None:
    """best.pt (the evaluated weights) when the best metric improved; epoch_NNNN.pt every checkpoint_every
    epochs, weights only unless train.epoch_checkpoint asks for the full state; last.pt (full state, the
    resume point) every epoch, written last: a save that fails (a full disk) or a kill part-way leaves the
    previous epoch's resume point, which redoes this epoch and rewrites the others identically."""
    t, sink, run_dir, epoch = run.cfg.train, run.sink, run.run_dir, run.progress.epoch
    metric = run.cfg.eval.best_metric
    sink.on_checkpoints_due(epoch)  # an engine that lost its run (frozen, then taken over) writes no file
    run.live.phase("saving", 1)
    state = run.snapshot().to_checkpoint()
    weights = weights_checkpoint(epoch, run.eval_model.state_dict(), run.info)
    if improved:
        ckpt.save_atomic(weights, run_dir / "best.pt")
        sink.on_checkpoint(epoch, "best", str(run_dir / "best.pt"), metric, value)
    if epoch % t.checkpoint_every == 0 or epoch == t.epochs:
        ckpt.save_atomic(state if t.epoch_checkpoint == "full" else weights, ckpt.epoch_path(run_dir, epoch))
        sink.on_checkpoint(epoch, "epoch", str(ckpt.epoch_path(run_dir, epoch)), metric, value)
        for removed in ckpt.prune(run_dir, t.keep_last):
            sink.on_checkpoint_removed(str(removed))
    ckpt.save_atomic(state, run_dir / "last.pt")
    sink.on_checkpoint(epoch, "last", str(run_dir / "last.pt"))


def lr_trajectory(cfg: ExperimentConfig, steps_per_epoch: int = 1) -> list[float]:
    """The LR each epoch would use, without training (for the builder's preview and tests)."""
    sched = build_schedule(cfg, steps_per_epoch)
    return [cfg.optim.lr * sched.factor(e) for e in range(cfg.train.epochs)]
