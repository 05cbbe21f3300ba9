"""ExperimentConfig: the one contract between the dashboard, the database and the engine.

The dashboard builds it, the DB stores it verbatim (JSON) on the run, the engine reads only it.
Every field has a type and a range; cross-field rules live in `model_validator`s so a bad config
is refused, field by field, before anything runs. Rules that need the outside world (does the
dataset exist, is the batch larger than the training split, are pretrained weights available
offline) live in `control.preflight`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class Section(BaseModel):
    # Unknown keys are typos, not options: refuse them so "lerning_rate" never silently does nothing.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------- data
class DataConfig(Section):
    dataset: str = Field("digits", min_length=1, max_length=200, description="Registered dataset name")
    val_fraction: float = Field(0.1, ge=0.0, le=0.5, description="Share of the training split held out for validation")
    stratified: bool = True
    split_seed: int = Field(0, ge=0, le=2**31 - 1)
    test_fraction: float = Field(
        0.2, gt=0.0, le=0.5, description="Used only when the dataset has no test split of its own"
    )
    image_size: int | None = Field(
        None, ge=4, le=1024, description="Resize images to this square size; None keeps them"
    )
    channels: Literal["auto", 1, 3] = Field("auto", description="Force grey (1) or colour (3) input")
    normalize: Literal["dataset", "imagenet", "none"] = Field(
        "dataset", description="dataset = mean/std of the training split"
    )
    kfold: int | None = Field(None, ge=2, le=20, description="K-fold cross-validation: K folds of train+val")
    fold: int = Field(0, ge=0, le=19, description="Which fold is the validation fold")
    train_on_val: bool = Field(False, description="Retrain on train+val (final model); val metrics are then optimistic")
    max_train_samples: int | None = Field(
        None, ge=1, le=10**9, description="Cap the training split (quick experiments)"
    )

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.kfold is not None and self.fold >= self.kfold:
            raise ValueError(f"fold must be < kfold ({self.kfold})")
        if self.kfold is not None and self.train_on_val:
            raise ValueError("train_on_val and kfold are exclusive")
        return self


# ---------------------------------------------------------------------------------------- model
class HeadConfig(Section):
    kind: Literal["linear", "mlp"] = "linear"
    hidden: list[int] = Field(default_factory=lambda: [256], max_length=4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before each linear layer of the head")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v):
        if any(h < 1 or h > 16384 for h in v):
            raise ValueError("hidden sizes must be between 1 and 16384")
        return v


class FreezeConfig(Section):
    epochs: int = Field(0, ge=0, le=10000, description="Train only the head for this many epochs")
    unfreeze_last: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="After that, unfreeze only the last N parameter tensors of the backbone (None = all)",
    )


class ModelConfig(Section):
    source: Literal["custom", "timm", "torchvision"] = "custom"
    name: str = Field("small_cnn", min_length=1, max_length=200)
    pretrained: bool = False
    weights_path: str | None = Field(None, max_length=4096, description="Local weights file for pretrained models")
    small_stem: bool = Field(False, description="3x3 stride-1 first conv, no maxpool (for small images)")
    stride1_stages: int = Field(0, ge=0, le=4, description="Also set stride 1 in the first N stride-2 stages")
    # custom resnet family
    widths: list[int] = Field(default_factory=lambda: [64, 128, 256, 512], min_length=1, max_length=6)
    depths: list[int] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=1, max_length=6)
    se: bool = Field(False, description="Squeeze-and-excitation blocks")
    drop_path: float = Field(0.0, ge=0.0, lt=1.0, description="Stochastic depth, max rate (linear over blocks)")
    shakedrop: float = Field(0.0, ge=0.0, lt=1.0, description="ShakeDrop max drop probability")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classifier")
    head: HeadConfig = Field(default_factory=HeadConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    backbone_lr_mult: float = Field(1.0, ge=0.0, le=100.0, description="Backbone LR = optimizer LR x this")

    @field_validator("widths", "depths")
    @classmethod
    def _positive_list(cls, v):
        if any(x < 1 or x > 4096 for x in v):
            raise ValueError("values must be between 1 and 4096")
        return v

    @model_validator(mode="after")
    def _same_length(self):
        if self.source == "custom" and self.name == "resnet" and len(self.widths) != len(self.depths):
            raise ValueError("widths and depths must have the same length")
        return self


# ---------------------------------------------------------------------------------- augmentation
class AugmentStep(Section):
    name: str = Field(..., min_length=1, max_length=100, description="albumentations transform class name")
    p: float = Field(0.5, ge=0.0, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_transform(self):
        from engine.augment import check_transform  # lazy: albumentations import is slow

        check_transform(self.name, self.params)
        return self


class MixupConfig(Section):
    mixup_alpha: float = Field(0.0, ge=0.0, le=10.0)
    cutmix_alpha: float = Field(0.0, ge=0.0, le=10.0)
    prob: float = Field(1.0, ge=0.0, le=1.0, description="Probability of applying mixup or cutmix to a batch")
    switch_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="Probability of cutmix instead of mixup when both are on"
    )
    stop_epoch: int | None = Field(None, ge=0, le=10000, description="Turn mixup/cutmix off from this epoch on")

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


class AugmentConfig(Section):
    train: list[AugmentStep] = Field(default_factory=list, max_length=50)
    mixup: MixupConfig = Field(default_factory=MixupConfig)
    fast_path: Literal["auto", "off"] = Field(
        "auto", description="Batched tensor augmentation when every step has a batched version"
    )


# ------------------------------------------------------------------------------------ optimizer
class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0, le=1.0)
    switch_to_sgd_epoch: int | None = Field(
        None, ge=1, le=10000, description="Adam-family -> SGD at this epoch (SWATS-style)"
    )
    sgd_lr: float | None = Field(None, gt=0.0, le=10.0, description="LR after the switch (default: lr)")
    grad_clip: float | None = Field(None, gt=0.0, le=1e6, description="Clip the global grad norm")
    accumulate: int = Field(1, ge=1, le=1024, description="Gradient accumulation steps")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v):
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("betas must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _nesterov(self):
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
        if self.switch_to_sgd_epoch is not None and self.name == "sgd":
            raise ValueError("switch_to_sgd_epoch needs an Adam-family optimizer")
        return self


# ------------------------------------------------------------------------------------- schedule
class ScheduleConfig(Section):
    name: Literal["none", "cosine", "multistep", "step", "plateau", "onecycle"] = "none"
    warmup_epochs: int = Field(0, ge=0, le=10000, description="Linear warmup from warmup_start_factor x lr")
    warmup_start_factor: float = Field(0.1, gt=0.0, le=1.0)
    t_max: int | None = Field(None, ge=1, le=10000, description="Cosine period in epochs (default: epochs - warmup)")
    eta_min: float = Field(0.0, ge=0.0, le=10.0)
    milestones: list[int] = Field(default_factory=list, max_length=100)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    step_size: int = Field(10, ge=1, le=10000)
    plateau_metric: Literal["val_loss", "val_acc"] = "val_loss"
    plateau_patience: int = Field(5, ge=0, le=10000)
    plateau_cooldown: int = Field(0, ge=0, le=10000)
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0)
    onecycle_pct_start: float = Field(0.3, gt=0.0, lt=1.0)

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, v):
        if any(m < 1 for m in v) or v != sorted(set(v)):
            raise ValueError("milestones must be positive, increasing and unique")
        return v

    @model_validator(mode="after")
    def _onecycle_warmup(self):
        if self.name == "onecycle" and self.warmup_epochs:
            raise ValueError("warmup_epochs: one-cycle has its own warmup (onecycle_pct_start); set warmup_epochs to 0")
        return self


# ----------------------------------------------------------------------------------------- loss
class LossConfig(Section):
    name: Literal["ce", "focal"] = "ce"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    smoothing_end: float | None = Field(
        None, ge=0.0, lt=1.0, description="Label smoothing moves linearly to this by the last epoch"
    )
    class_weights: Literal["none", "inverse_frequency"] = "none"
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0)
    focal_alpha: list[float] | None = Field(None, max_length=100_000, description="Per-class alpha for focal loss")

    @field_validator("focal_alpha")
    @classmethod
    def _alpha(cls, v):
        if v is not None and any(a < 0 or a > 1000 for a in v):
            raise ValueError("alpha values must be between 0 and 1000")
        return v


# ---------------------------------------------------------------------------------- regularize
class EMAConfig(Section):
    enabled: bool = False
    decay: float = Field(0.999, gt=0.0, lt=1.0)
    evaluate_ema: bool = Field(True, description="Validate and test the EMA weights instead of the raw ones")


class EarlyStopConfig(Section):
    enabled: bool = False
    metric: Literal["val_loss", "val_acc"] = "val_acc"
    patience: int = Field(10, ge=1, le=10000)
    min_delta: float = Field(0.0, ge=0.0, le=1e6)


class RegularizeConfig(Section):
    ema: EMAConfig = Field(default_factory=EMAConfig)
    early_stopping: EarlyStopConfig = Field(default_factory=EarlyStopConfig)


# ---------------------------------------------------------------------------------------- train
class TrainConfig(Section):
    epochs: int = Field(10, ge=1, le=10000)
    batch_size: int = Field(64, ge=1, le=65536)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    deterministic: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = Field(1, ge=1, le=64, description="Number of GPUs (>1 launches under torchrun)")
    sync_bn: bool = Field(False, description="SyncBatchNorm across devices (multi-device runs)")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="Autocast dtype on CUDA")
    channels_last: bool = False
    compile: bool = False
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader workers for the CPU augmentation path")
    checkpoint_every: int = Field(1, ge=1, le=10000)
    keep_last: int = Field(3, ge=1, le=10000, description="Epoch checkpoints kept on disk (best is kept separately)")
    init_from_run: int | None = Field(
        None, ge=1, le=2**62, description="Start from this run's checkpoint (fine-tune / continue)"
    )
    init_checkpoint: Literal["best", "last"] = "last"
    max_steps_per_epoch: int | None = Field(None, ge=1, le=10**9, description="Cap steps per epoch (smoke tests)")


# ----------------------------------------------------------------------------------------- eval
TTA_VARIANTS = ("none", "hflip", "vflip", "rot90", "dihedral8", "random_mean", "random_vote", "multicrop")


class EvalConfig(Section):
    best_metric: Literal["val_acc", "val_loss"] = "val_acc"
    tta: list[Literal[TTA_VARIANTS]] = Field(default_factory=lambda: ["none"], max_length=2 * len(TTA_VARIANTS))  # type: ignore[valid-type]
    tta_passes: int = Field(5, ge=1, le=100, description="Augmented passes for random_mean / random_vote")
    test_checkpoint: Literal["best", "last"] = "best"


# ------------------------------------------------------------------------------------ the whole
class ExperimentConfig(Section):
    name: str = Field("", max_length=200)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    regularize: RegularizeConfig = Field(default_factory=RegularizeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _cross_field(self):
        epochs = self.train.epochs
        if self.schedule.milestones and self.schedule.milestones[-1] > epochs:
            raise ValueError(f"schedule.milestones: {self.schedule.milestones[-1]} is beyond the last epoch ({epochs})")
        if self.schedule.warmup_epochs >= epochs and self.schedule.warmup_epochs > 0:
            raise ValueError(
                f"schedule.warmup_epochs ({self.schedule.warmup_epochs}) must be < train.epochs ({epochs})"
            )
        if self.optim.switch_to_sgd_epoch is not None and self.optim.switch_to_sgd_epoch >= epochs:
            raise ValueError("optim.switch_to_sgd_epoch must be before the last epoch")
        if self.model.freeze.epochs >= epochs and self.model.freeze.epochs > 0:
            raise ValueError("model.freeze.epochs must be < train.epochs")
        if self.model.pretrained and self.model.source == "custom":
            raise ValueError("model.pretrained: custom models have no pretrained weights")
        if self.train.devices > 1 and self.train.batch_size % self.train.devices:
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) must be divisible by train.devices ({self.train.devices})"
            )
        if self.train.amp != "off" and self.train.device == "cpu":
            raise ValueError("train.amp: mixed precision needs CUDA (device auto or cuda)")
        if {"random_mean", "random_vote"} & set(self.eval.tta) and not self.augment.train:
            raise ValueError(
                "eval.tta: random_mean/random_vote repeat the training augmentation, and augment.train is empty"
            )
        return self

    # ---- serialisation: JSON is what the DB stores, YAML what users download and edit
    def to_json(self) -> str:
        return self.model_dump_json()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ExperimentConfig:
        data = yaml.safe_load(text)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([("(root)", "the config must be a mapping of sections")])
        return parse_config(data)

    @classmethod
    def from_file(cls, path: str | Path) -> ExperimentConfig:
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            return parse_config(json.loads(text))
        return cls.from_yaml(text)


class ConfigError(ValueError):
    """A config that cannot run, with one message per offending field."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in errors))

    def by_field(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for loc, msg in self.errors:
            out.setdefault(loc, msg)
        return out


def _loc_part(part) -> str:
    """A field name as written, or quoted when it is not a plain name (an empty or odd extra key)."""
    text = str(part)
    return text if re.fullmatch(r"[\w\-]+", text) else json.dumps(text, ensure_ascii=False)


def errors_from_validation(exc: ValidationError) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors():
        loc = ".".join(_loc_part(p) for p in err["loc"]) or "(root)"
        msg = " ".join(err["msg"].removeprefix("Value error, ").split())  # one line per field, always
        errors.append((loc, msg))
    return errors


def parse_config(data: Any) -> ExperimentConfig:
    """Validate raw data into a config, turning every failure into a ConfigError (never a traceback)."""
    if not isinstance(data, dict):
        raise ConfigError([("(root)", "the config must be a mapping of sections")])
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(errors_from_validation(exc)) from None
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. a param value albumentations chokes on
        raise ConfigError([("(root)", str(exc)[:500])]) from None
