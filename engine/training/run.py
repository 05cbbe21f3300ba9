"""The live parts of one training run (device, data, model, optimizer, schedule, EMA, ...), built from the
config, and their round trip through a TrainState."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.augment import build_pipeline
from engine.config import ExperimentConfig, parse_config
from engine.data import DatasetSpec, Splits, load_arrays, make_splits, split_notes
from engine.models import build_model, matching_tensors
from engine.sinks import EventSink
from engine.training import distributed
from engine.training.hooks import TrainHooks
from engine.training.live import LiveProgress
from engine.training.losses import SmoothingSchedule, build_loss
from engine.training.optim import EpochSchedule, build_optimizer, build_schedule
from engine.training.seeding import seed_everything
from engine.training.state import Progress, RunInfo, TrainState

HEARTBEAT_EVERY_S = 2.0
MAX_AUTO_THREADS = 32  # intra-op parallelism stops paying well before this on the models trained here


class TrainingFailed(RuntimeError):
    """A run that cannot go on (NaN loss, ...), with a short reason for the user."""


class StopRequested(Exception):
    pass


class Stopper:
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


class Heartbeat:
    """Due every HEARTBEAT_EVERY_S while training; the sink's heartbeat may ask the run to stop."""

    def __init__(self):
        self.last = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last <= HEARTBEAT_EVERY_S:
            return False
        self.reset()
        return True

    def reset(self) -> None:
        self.last = time.monotonic()


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingFailed("train.device is cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX512-BF16 or AMX, what oneDNN's bf16 kernels use); without
    them bf16 autocast on a CPU is emulated and slower than float32."""
    return any(
        getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def cpu_amp_error(t) -> str | None:
    """Why train.amp cannot run as asked on device cpu here (bf16 without native bfloat16), else None.
    The preflight refuses the config with it; an engine launched without a preflight fails with it."""
    if t.amp == "bf16" and t.device == "cpu" and not cpu_bf16_supported():
        return "bf16 on this CPU would be emulated (it has neither AVX512-BF16 nor AMX) and slower than off"
    return None


def thread_count(requested: int | None) -> int:
    """train.threads, else the cores this process may use (its CPU affinity, which a shared box, a container
    or a Slurm job narrows, while torch's default counts every core of the machine), shared among the
    processes torchrun started on this node."""
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, min(MAX_AUTO_THREADS, per_process))


def build_ema(model, cfg):
    if not cfg.regularize.ema.enabled:
        return None
    from timm.utils import ModelEmaV3

    e = cfg.regularize.ema
    return ModelEmaV3(model, decay=e.decay, use_warmup=e.warmup, warmup_power=e.warmup_power)


def ema_horizon(decay: float) -> int:
    """Updates an EMA of this decay needs before the initial weights' share, decay^n, falls below 1/e."""
    return round(1.0 / (1.0 - decay))


def ema_fact(cfg, planned_updates: int) -> dict | None:
    """What the run should know about its EMA before training: the updates it will get against the horizon,
    the decay it reaches, and a warning when it is still mostly its random initial weights at the end."""
    e = cfg.regularize.ema
    if not e.enabled:
        return None
    horizon = ema_horizon(e.decay)
    reached = min(e.decay, 1 - (1 + max(planned_updates - 1, 0)) ** -e.warmup_power) if e.warmup else e.decay
    fact = {"updates_planned": planned_updates, "horizon": horizon, "warmup": e.warmup, "final_decay": reached}
    if planned_updates < horizon and not e.warmup:
        fact["warning"] = (
            f"EMA (decay {e.decay:g}) gets only {planned_updates} updates, fewer than 1/(1-decay) = {horizon}: its "
            f"weights stay {e.decay**planned_updates:.0%} the random initial ones, so validating them reads near "
            "chance level. Turn on regularize.ema.warmup, lower the decay, or train longer"
        )
    elif planned_updates < horizon:
        fact["warning"] = (
            f"EMA (decay {e.decay:g}) gets only {planned_updates} updates, fewer than 1/(1-decay) = {horizon}: "
            f"with warmup its decay reaches only {reached:.4f}"
        )
    return fact


def build_mixup(cfg, num_classes):
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


@dataclass
class Run:
    cfg: ExperimentConfig
    run_dir: Path
    sink: EventSink
    hooks: TrainHooks
    stopper: Stopper
    device: torch.device
    dist: distributed.Dist
    amp_dtype: torch.dtype | None
    splits: Splits
    model: torch.nn.Module
    train_model: torch.nn.Module  # the model as stepped: DDP-wrapped and/or compiled
    loss_fn: torch.nn.Module
    mixup: object
    ema: object
    optimizer: torch.optim.Optimizer
    schedule: EpochSchedule
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    progress: Progress
    beat: Heartbeat
    threads: int
    val_probs: dict[int, torch.Tensor] = field(default_factory=dict)  # by epoch: the latest and the best
    smoothing: SmoothingSchedule | None = None  # label smoothing per epoch (None: the loss's constant one)
    _pipeline: object = field(default=False, repr=False)  # False: not built yet
    live: LiveProgress = field(default_factory=lambda: LiveProgress(EventSink()))  # progress inside a phase

    @property
    def pipeline(self):
        """The albumentations pipeline (CPU path, random-pass TTA; None without augmentation), built on
        first use: a run on the fast path never builds it, nor imports albumentations for it."""
        if self._pipeline is False:
            self._pipeline = build_pipeline(self.cfg.augment.train, self.splits.image_size)
        return self._pipeline

    @property
    def cpu_pipeline(self):
        """What the training batches need: the pipeline on the CPU path, None on the fast path (not built)."""
        from engine.training import fastpath

        return None if fastpath.plan(self.cfg, self.splits, self.device).usable else self.pipeline

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated, checkpointed as best and tested: the EMA weights when asked."""
        ema_cfg = self.cfg.regularize.ema
        return self.ema.module if (self.ema is not None and ema_cfg.evaluate_ema) else self.model

    @property
    def info(self) -> RunInfo:
        s = self.splits
        return RunInfo(self.cfg.to_json(), s.class_names, s.mean, s.std)

    def keep_val_probs(self, epoch: int, probs: torch.Tensor | None) -> None:
        """Validation predictions of the latest and the best epoch, for the end-of-run evaluation to reuse."""
        if probs is not None:
            self.val_probs[epoch] = probs
        keep = {epoch, self.progress.best_epoch}
        self.val_probs = {e: p for e, p in self.val_probs.items() if e in keep}

    def use_optimizer(self, name: str, base_lr: float) -> None:
        """A fresh optimizer (the Adam->SGD switch, or a resumed run that had switched)."""
        c = self.cfg
        self.optimizer = build_optimizer(c.optim, self.model, c.model.backbone_lr_mult, name, base_lr)
        self.progress.optim_name, self.progress.base_lr = name, base_lr
        self.schedule.attach(base_lr)

    def snapshot(self) -> TrainState:
        return TrainState(
            progress=self.progress,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            schedule={**self.schedule.state_dict(), "smoothing": self.smoothing and self.smoothing.state_dict()},
            ema=self.ema.module.state_dict() if self.ema is not None else None,
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            info=self.info,
        )

    def restore(self, state: TrainState) -> None:
        p = state.progress
        if p.optim_name != self.progress.optim_name:
            self.use_optimizer(p.optim_name, p.base_lr)
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.schedule.load_state_dict(state.schedule)
        if self.smoothing is not None:
            self.smoothing.load_state_dict(state.schedule.get("smoothing"))
        if self.ema is not None and state.ema is not None:
            self.ema.module.load_state_dict(state.ema)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.progress = p


def build_run(
    cfg: ExperimentConfig,
    spec: DatasetSpec,
    run_dir: Path,
    sink: EventSink,
    stopper: Stopper,
    hooks: TrainHooks,
    init_state: dict | None,
    loaded: tuple | None = None,
) -> Run:
    """Everything a run trains with, in an order that keeps the random draws (model init) reproducible.
    loaded: (ImageArrays, Splits) of this config, already loaded by this process (its preflight)."""
    t = cfg.train
    device, dist, amp_dtype = _device(t)
    data, splits = loaded if loaded is not None else load_and_split(spec, cfg.data)
    for field_name, note in split_notes(data, cfg.data):  # e.g. the dataset's own validation split wins
        sink.on_log(f"{field_name}: {note}")
    if len(splits.train_y) < 1 or len(splits.val_y) < 1 and not cfg.data.train_on_val and cfg.data.val_fraction > 0:
        raise TrainingFailed("the training or validation split is empty; lower data.val_fraction")
    if len(splits.mean) != splits.channels:  # data.normalize custom with one value per channel of other images
        raise TrainingFailed(f"data.mean has {len(splits.mean)} values but the images have {splits.channels} channels")
    model = build_model(cfg.model, splits.channels, splits.num_classes)
    if init_state is not None:  # fine-tune / continue from another run's checkpoint
        _load_compatible(model, init_state, sink, t)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, splits.num_classes, splits.train_y).to(device)
    mixup, ema = build_mixup(cfg, splits.num_classes), build_ema(model, cfg)
    steps_per_epoch = _steps_per_epoch(t, len(splits.train_y))
    train_model = distributed.wrap(model, dist, device, t.sync_bn)  # DDP when under torchrun
    return Run(
        cfg=cfg,
        run_dir=Path(run_dir),
        sink=sink,
        hooks=hooks,
        stopper=stopper,
        device=device,
        dist=dist,
        amp_dtype=amp_dtype,
        splits=splits,
        model=model,
        train_model=torch.compile(train_model) if t.compile else train_model,
        loss_fn=loss_fn,
        mixup=mixup,
        ema=ema,
        optimizer=build_optimizer(cfg.optim, model, cfg.model.backbone_lr_mult),
        schedule=build_schedule(cfg, steps_per_epoch),
        scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
        steps_per_epoch=steps_per_epoch,
        progress=Progress(optim_name=cfg.optim.name, base_lr=cfg.optim.lr),
        beat=Heartbeat(),
        threads=torch.get_num_threads(),
        smoothing=SmoothingSchedule(cfg.loss, t.epochs),
        live=LiveProgress(sink, hooks=hooks),
    )


def load_and_split(spec: DatasetSpec, data_cfg) -> tuple:
    """(ImageArrays, Splits): the one load of a run's dataset in a process."""
    data = load_arrays(spec)
    return data, make_splits(data, data_cfg)


def _device(t) -> tuple[torch.device, distributed.Dist, torch.dtype | None]:
    """This process's device (its GPU under torchrun), seeded, and the autocast dtype: train.amp on CUDA,
    bf16 on a CPU with native bfloat16. Device auto on a machine without CUDA trains float32 where the CPU
    cannot do what train.amp asks (fp16, or bf16 without native support), and the run's log says so;
    device cpu with bf16 on such a CPU is refused (the preflight refuses it before a run exists)."""
    device = pick_device(t.device)
    dist, device = distributed.setup(device)
    seed_everything(t.seed, t.deterministic)
    if error := cpu_amp_error(t):
        raise TrainingFailed(f"train.amp: {error}")
    amp_dtype = None
    if device.type == "cuda":
        amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp]
    elif t.amp == "bf16" and cpu_bf16_supported():
        amp_dtype = torch.bfloat16
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not t.deterministic
    return device, dist, amp_dtype


def _steps_per_epoch(t, n_train: int) -> int:
    steps = max(1, n_train // t.batch_size if n_train > t.batch_size else 1)
    return min(steps, t.max_steps_per_epoch) if t.max_steps_per_epoch else steps


def _load_compatible(model, init_state: dict, sink, t) -> None:
    """The parent's tensors that match by name and shape (preflight refused a parent that supplies too
    few); reported in the log and as the run's `init_from` fact."""
    own = model.state_dict()
    usable = matching_tensors(model, init_state["model"])
    model.load_state_dict(usable, strict=False)
    skipped = len(own) - len(usable)
    sink.on_log(
        f"initialised from run {t.init_from_run}'s {t.init_checkpoint} checkpoint ({t.init_mode}): "
        f"{len(usable)} tensors loaded, {skipped} kept fresh (no tensor of that name and shape)"
    )
    sink.on_facts(
        {
            "init_from": {
                "run_id": t.init_from_run,
                "checkpoint": t.init_checkpoint,
                "epoch": init_state.get("epoch"),
                "mode": t.init_mode,
                "loaded": len(usable),
                "kept": skipped,
            }
        }
    )


def continue_from(run: Run, init_state: dict) -> None:
    """train.init_mode continue: take over the parent's optimizer state (momentum buffers, Adam moments),
    keeping this config's hyperparameters (lr, weight decay, betas...): the buffers are the parent's, the
    param groups this run's. The LR schedule goes on where the parent's stopped when it is the same
    schedule (`continue_schedule`), else this run's starts at its epoch 0."""
    fresh = run.optimizer.state_dict()
    parent = init_state["optimizer"]
    sizes = [len(g["params"]) for g in fresh["param_groups"]]
    if [len(g["params"]) for g in parent["param_groups"]] != sizes:
        raise TrainingFailed(
            "train.init_mode continue: the parent's optimizer has other parameter groups; use init_mode weights"
        )
    run.optimizer.load_state_dict({"state": parent["state"], "param_groups": fresh["param_groups"]})
    continue_schedule(run, init_state)
    if run.ema is not None and init_state.get("ema"):
        run.ema.module.load_state_dict(init_state["ema"])
    run.sink.on_log(f"continuing run {run.cfg.train.init_from_run}: its optimizer state is loaded")


def continue_schedule(run: Run, init_state: dict) -> None:
    """A continued run whose schedule section equals its parent's continues that schedule: an epoch-based
    one from the parent's position (its epochs done, with the parent's length: cosine's period, one-cycle's
    span), a plateau with its reductions and counters; the factor applies to this run's optim.lr. Another
    schedule starts at this run's epoch 0. Either is said in the log and the run's `schedule_continued` fact."""
    done = int(init_state.get("epoch") or 0)
    try:
        parent_cfg = parse_config(json.loads(init_state["config"]))
    except Exception:  # a checkpoint without a config this version reads
        parent_cfg = None
    mine = run.cfg.schedule
    if parent_cfg is None or parent_cfg.schedule != mine:
        theirs = "unreadable" if parent_cfg is None else parent_cfg.schedule.name
        if theirs == mine.name:
            theirs += " with other settings"
        run.sink.on_log(
            f"continuing run {run.cfg.train.init_from_run}: this run's schedule ({mine.name}) is not the parent's "
            f"({theirs}), so it starts afresh at this run's epoch 0"
        )
        run.sink.on_facts({"schedule_continued": {"continued": False, "parent": theirs, "schedule": mine.name}})
        return
    sched = build_schedule(parent_cfg, run.steps_per_epoch)  # the parent's, as it stood at its checkpoint
    if init_state.get("schedule"):
        sched.load_state_dict(init_state["schedule"])
    sched.offset, sched.start = sched.position_after(done)
    run.schedule = sched.attach(run.progress.base_lr)
    run.sink.on_log(
        f"continuing run {run.cfg.train.init_from_run}: the same {mine.name} schedule goes on from its epoch "
        f"{sched.start} (of {sched.epochs})"
    )
    run.sink.on_facts(
        {
            "schedule_continued": {
                "continued": True,
                "schedule": mine.name,
                "from_epoch": sched.start,
                "span": sched.epochs,
            }
        }
    )
