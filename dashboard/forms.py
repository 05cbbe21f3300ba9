"""The run builder's logic, free of Streamlit: widget values <-> config dict, and errors by field.

The builder shows one widget per leaf field of `ExperimentConfig`. The list of fields is read from
the pydantic model itself (`field_specs`), so a field added to the config appears in the builder
with its description as help text and its range as widget bounds, without touching the page.
Widgets are keyed `cfg:<dotted path>` ("cfg:optim.lr"); the augmentation list is edited as steps
keyed by a stable uid ("aug:<uid>:p", "aug:<uid>:params") so reordering never mixes up params.

Everything here takes and returns plain data, so it is unit-tested without a browser.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel

from engine.config import AugmentStep, ExperimentConfig

KEY_PREFIX = "cfg:"
STEPS_KEY = "aug_steps"  # session key: list of {"uid", "name"} in pipeline order

# (config section, tab title) in the order the builder shows them.
SECTIONS: list[tuple[str, str]] = [
    ("data", "Data"),
    ("model", "Model"),
    ("augment", "Augmentation"),
    ("optim", "Optimizer"),
    ("schedule", "LR schedule"),
    ("loss", "Loss"),
    ("regularize", "Regularization"),
    ("train", "Training"),
    ("eval", "Evaluation"),
]
SECTION_TITLES = dict(SECTIONS) | {"general": "General"}

# Labels a person reads; units in brackets. Fields not listed get their name, humanised.
LABELS: dict[str, str] = {
    "name": "Run name",
    "data.dataset": "Dataset",
    "data.val_fraction": "Validation share (of train)",
    "data.stratified": "Stratified splits",
    "data.split_seed": "Split seed",
    "data.test_fraction": "Test share (no test split only)",
    "data.image_size": "Image size [px, square]",
    "data.channels": "Channels",
    "data.normalize": "Normalisation",
    "data.kfold": "K-fold: number of folds",
    "data.fold": "Validation fold",
    "data.train_on_val": "Retrain on train + val",
    "data.max_train_samples": "Cap training images",
    "model.source": "Model family",
    "model.name": "Architecture",
    "model.pretrained": "Pretrained weights",
    "model.weights_path": "Local weights file",
    "model.small_stem": "Small-image stem",
    "model.stride1_stages": "Stride-1 stages",
    "model.widths": "Stage widths [channels]",
    "model.depths": "Stage depths [blocks]",
    "model.se": "Squeeze-and-excitation",
    "model.drop_path": "Stochastic depth (max rate)",
    "model.shakedrop": "ShakeDrop (max p)",
    "model.dropout": "Dropout before classifier",
    "model.head.kind": "Head",
    "model.head.hidden": "Head hidden sizes",
    "model.head.dropout": "Head dropout",
    "model.freeze.epochs": "Head-only epochs",
    "model.freeze.unfreeze_last": "Then unfreeze last N tensors",
    "model.backbone_lr_mult": "Backbone LR multiplier [x]",
    "augment.train": "Training augmentation pipeline",
    "augment.mixup.mixup_alpha": "Mixup alpha",
    "augment.mixup.cutmix_alpha": "CutMix alpha",
    "augment.mixup.prob": "Mix probability (per batch)",
    "augment.mixup.switch_prob": "CutMix instead of Mixup (prob.)",
    "augment.mixup.stop_epoch": "Stop mixing at epoch",
    "augment.fast_path": "Batched GPU augmentation",
    "optim.name": "Optimizer",
    "optim.lr": "Learning rate",
    "optim.momentum": "Momentum",
    "optim.nesterov": "Nesterov",
    "optim.weight_decay": "Weight decay",
    "optim.betas": "Betas (β1, β2)",
    "optim.eps": "Epsilon",
    "optim.switch_to_sgd_epoch": "Switch to SGD at epoch",
    "optim.sgd_lr": "LR after the switch",
    "optim.grad_clip": "Clip gradient norm at",
    "optim.accumulate": "Gradient accumulation [steps]",
    "schedule.name": "Schedule",
    "schedule.warmup_epochs": "Warmup [epochs]",
    "schedule.warmup_start_factor": "Warmup starts at [x LR]",
    "schedule.t_max": "Cosine period [epochs]",
    "schedule.eta_min": "Minimum LR",
    "schedule.milestones": "Milestones [epochs]",
    "schedule.gamma": "Decay factor (gamma)",
    "schedule.step_size": "Step size [epochs]",
    "schedule.plateau_metric": "Plateau: watch",
    "schedule.plateau_patience": "Plateau: patience [epochs]",
    "schedule.plateau_cooldown": "Plateau: cooldown [epochs]",
    "schedule.plateau_factor": "Plateau: factor",
    "schedule.onecycle_pct_start": "One-cycle: rising share",
    "loss.name": "Loss",
    "loss.label_smoothing": "Label smoothing",
    "loss.smoothing_end": "Smoothing at the last epoch",
    "loss.class_weights": "Class weights",
    "loss.focal_gamma": "Focal gamma",
    "loss.focal_alpha": "Focal alpha (per class)",
    "regularize.ema.enabled": "EMA of weights",
    "regularize.ema.decay": "EMA decay",
    "regularize.ema.evaluate_ema": "Evaluate the EMA weights",
    "regularize.early_stopping.enabled": "Early stopping",
    "regularize.early_stopping.metric": "Early stopping: watch",
    "regularize.early_stopping.patience": "Early stopping: patience [epochs]",
    "regularize.early_stopping.min_delta": "Early stopping: min. improvement",
    "train.epochs": "Epochs",
    "train.batch_size": "Batch size [images]",
    "train.seed": "Seed",
    "train.deterministic": "Deterministic (slower)",
    "train.device": "Device",
    "train.devices": "GPUs",
    "train.amp": "Mixed precision",
    "train.channels_last": "Channels-last memory format",
    "train.compile": "torch.compile",
    "train.num_workers": "Data loader workers",
    "train.checkpoint_every": "Checkpoint every [epochs]",
    "train.keep_last": "Keep last N epoch checkpoints",
    "train.init_from_run": "Initialise from run #",
    "train.init_checkpoint": "…from its checkpoint",
    "train.max_steps_per_epoch": "Cap steps per epoch",
    "train.sync_bn": "Sync batch norm (multi-GPU)",
    "eval.best_metric": "Best checkpoint by",
    "eval.tta": "Test-time augmentation variants",
    "eval.tta_passes": "Random TTA passes",
    "eval.test_checkpoint": "Test the checkpoint",
}

# Help for fields whose config has no description.
HELP: dict[str, str] = {
    "name": "Shown in the Runs table; optional.",
    "model.source": "custom: our small CNN / ResNet; timm or torchvision: any model by name.",
    "model.name": "custom: small_cnn or resnet. timm / torchvision: any model name (type to search or enter a new one).",
    "model.head.kind": "linear, or an MLP with the hidden sizes below",
    "model.head.hidden": "comma-separated, e.g. 512, 256",
    "model.widths": "comma-separated channels per stage, e.g. 64, 128, 256, 512",
    "model.depths": "comma-separated residual blocks per stage, e.g. 2, 2, 2, 2",
    "optim.betas": "two numbers in [0, 1), e.g. 0.9, 0.999",
    "optim.nesterov": "SGD with momentum only",
    "schedule.milestones": "comma-separated epochs where LR is multiplied by gamma, e.g. 30, 60",
    "loss.focal_alpha": "comma-separated, one per class; empty = none",
    "loss.label_smoothing": "0 = none; 0.1 is a common choice",
    "eval.tta": "each variant is evaluated on the test split at the end; 'none' is the plain prediction",
    "train.seed": "Seeds weights, shuffling and augmentation",
    "optim.momentum": "SGD and RMSprop",
    "optim.weight_decay": "decoupled for AdamW, L2 for the others",
    "augment.mixup.mixup_alpha": "0 = off; 0.2 to 1 are common",
    "augment.mixup.cutmix_alpha": "0 = off; 1 is common",
}

# Shown in an "Advanced" expander of their section instead of at the top.
ADVANCED = {
    "data.stratified",
    "data.split_seed",
    "data.test_fraction",
    "data.kfold",
    "data.fold",
    "data.train_on_val",
    "data.max_train_samples",
    "data.channels",
    "data.normalize",
    "model.weights_path",
    "model.stride1_stages",
    "model.shakedrop",
    "model.head.kind",
    "model.head.hidden",
    "model.head.dropout",
    "model.freeze.epochs",
    "model.freeze.unfreeze_last",
    "model.backbone_lr_mult",
    "augment.fast_path",
    "optim.eps",
    "optim.switch_to_sgd_epoch",
    "optim.sgd_lr",
    "optim.grad_clip",
    "optim.accumulate",
    "schedule.warmup_start_factor",
    "schedule.plateau_cooldown",
    "loss.smoothing_end",
    "loss.class_weights",
    "train.deterministic",
    "train.devices",
    "train.amp",
    "train.channels_last",
    "train.compile",
    "train.sync_bn",
    "train.num_workers",
    "train.checkpoint_every",
    "train.keep_last",
    "train.init_from_run",
    "train.init_checkpoint",
    "train.max_steps_per_epoch",
    "eval.test_checkpoint",
}

# Number-input step sizes where the automatic one is awkward.
STEPS: dict[str, float] = {
    "optim.lr": 1e-4,
    "optim.weight_decay": 1e-4,
    "optim.sgd_lr": 1e-4,
    "schedule.eta_min": 1e-5,
    "optim.eps": 1e-9,
    "regularize.ema.decay": 1e-4,
    "regularize.early_stopping.min_delta": 1e-3,
    "data.val_fraction": 0.05,
    "data.test_fraction": 0.05,
    "optim.momentum": 0.01,
}

DEFAULT_MODEL_NAME = {"custom": "small_cnn", "timm": "resnet18", "torchvision": "resnet18"}
CUSTOM_MODELS = ["small_cnn", "resnet"]
TIMM_SUGGESTIONS = [
    "resnet18",
    "resnet26d",
    "resnet34",
    "resnet50",
    "resnet50d",
    "seresnext26d_32x4d",
    "wide_resnet50_2",
    "efficientnet_b0",
    "efficientnet_b2",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "convnext_nano",
    "convnext_tiny",
    "regnety_008",
    "densenet121",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
]
TORCHVISION_SUGGESTIONS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "wide_resnet50_2",
    "resnext50_32x4d",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "convnext_tiny",
    "regnet_y_800mf",
    "densenet121",
    "shufflenet_v2_x1_0",
    "vit_b_16",
]


# ------------------------------------------------------------------------------- field specs
@dataclass(frozen=True)
class FieldSpec:
    """One leaf field of the config and how the builder edits it."""

    path: str  # dotted, e.g. "optim.lr"
    kind: str  # bool | int | float | text | choice | multichoice | int_list | float_list | steps | model_name | dataset
    label: str
    help: str
    default: Any
    optional: bool = False  # None is a valid value (empty widget)
    options: tuple = ()
    min: float | None = None  # inclusive widget bounds from the schema's ge/gt/le/lt
    max: float | None = None
    step: float | None = None
    advanced: bool = False

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.path

    @property
    def section(self) -> str:
        return section_of(self.path)


def _unwrap_optional(tp):
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


JS_SAFE_INT = 2**53 - 1  # a browser number input cannot hold more; larger schema bounds mean "no bound"


def _bounds(metadata) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in metadata:
        if isinstance(m, (annotated_types.Ge, annotated_types.Gt)):
            lo = m.ge if isinstance(m, annotated_types.Ge) else m.gt
        elif isinstance(m, (annotated_types.Le, annotated_types.Lt)):
            hi = m.le if isinstance(m, annotated_types.Le) else m.lt
    lo = None if lo is not None and lo < -JS_SAFE_INT else lo
    hi = None if hi is not None and hi > JS_SAFE_INT else hi
    return lo, hi


def _kind(tp) -> tuple[str, tuple]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "bool", ()
    if tp is int:
        return "int", ()
    if tp is float:
        return "float", ()
    if tp is str:
        return "text", ()
    if origin is Literal:
        return "choice", tuple(args)
    if origin in (list, tuple):
        inner = args[0] if args else Any
        if typing.get_origin(inner) is Literal:
            return "multichoice", typing.get_args(inner)
        if inner is int:
            return "int_list", ()
        if inner is float:
            return "float_list", ()
        if inner is AugmentStep:
            return "steps", ()
    raise TypeError(f"the builder has no widget for {tp!r}")


def _humanise(path: str) -> str:
    return path.rsplit(".", 1)[-1].replace("_", " ").capitalize()


def _default_step(kind: str, default, lo, hi) -> float | None:
    if kind == "int":
        return 1
    if kind != "float":
        return None
    if isinstance(default, (int, float)) and default > 0:
        return min(0.1, 10 ** math.floor(math.log10(default)))
    return 0.01 if (hi is not None and hi <= 1) else 0.1


def _walk(model: type[BaseModel], prefix: str = ""):
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        tp, optional = _unwrap_optional(info.annotation)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and tp is not AugmentStep:
            yield from _walk(tp, path + ".")
            continue
        kind, options = _kind(tp)
        if path == "model.name":
            kind = "model_name"
        elif path == "data.dataset":
            kind = "dataset"
        default = info.get_default(call_default_factory=True)
        lo, hi = _bounds(info.metadata)
        yield FieldSpec(
            path=path,
            kind=kind,
            label=LABELS.get(path, _humanise(path)),
            help=HELP.get(path) or info.description or "",
            default=default,
            optional=optional,
            options=options,
            min=lo,
            max=hi,
            step=STEPS.get(path, _default_step(kind, default, lo, hi)),
            advanced=path in ADVANCED,
        )


_SPECS: list[FieldSpec] | None = None


def field_specs() -> list[FieldSpec]:
    """Every leaf field of ExperimentConfig, in declaration order."""
    global _SPECS
    if _SPECS is None:
        _SPECS = list(_walk(ExperimentConfig))
    return _SPECS


def specs_by_section() -> dict[str, list[FieldSpec]]:
    out: dict[str, list[FieldSpec]] = {"general": []}
    for s in field_specs():
        out.setdefault(s.section, []).append(s)
    return out


def section_of(path: str) -> str:
    head = path.split(".", 1)[0]
    return head if head in SECTION_TITLES and head != "general" else "general"


# ------------------------------------------------------------------------------- nested dict access
def get_path(data: dict, path: str, default=None):
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_path(data: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def default_config() -> dict:
    return ExperimentConfig().model_dump(mode="json")


# ------------------------------------------------------------------------------- value <-> widget
def _list_text(values) -> str:
    if values is None:
        return ""
    return ", ".join(_num_text(v) for v in values)


def _num_text(v) -> str:
    return (
        str(int(v))
        if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1)
        else repr(float(v))
    )


def _parse_list(text: str, kind: str, optional: bool):
    """'64, 128' -> [64, 128]; raises ValueError with a message a person understands."""
    text = (text or "").strip().strip("[]()").strip()
    if not text:
        return None if optional else []
    out = []
    for part in re.split(r"[,\s;]+", text):
        if not part:
            continue
        try:
            out.append(int(part) if kind == "int_list" else float(part))
        except ValueError:
            what = "whole numbers" if kind == "int_list" else "numbers"
            raise ValueError(f"'{part}' is not a number: enter {what} separated by commas") from None
    return out


def to_widget(spec: FieldSpec, value):
    """A config value -> what the widget holds."""
    if spec.kind in ("int_list", "float_list"):
        return _list_text(value)
    if spec.kind in ("text", "model_name", "dataset"):
        return "" if value is None else str(value)
    if spec.kind == "multichoice":
        return list(value or [])
    if spec.kind == "float" and value is not None:
        return float(value)
    if spec.kind == "int" and value is not None:
        return int(value)
    return value


def from_widget(spec: FieldSpec, value):
    """What the widget holds -> a config value; raises ValueError for text that does not parse."""
    if spec.kind in ("int_list", "float_list"):
        return _parse_list(value, spec.kind, spec.optional)
    if spec.kind in ("text", "model_name", "dataset"):
        value = (value or "").strip()
        return None if (spec.optional and not value) else value
    if spec.kind == "multichoice":
        return list(value or [])
    return value


# ------------------------------------------------------------------------------- augmentation steps
_uids = itertools.count(1)


def new_uid() -> str:
    return f"s{next(_uids)}"


def params_text(params: dict) -> str:
    return json.dumps(params or {}, separators=(", ", ": "))


def parse_params(text: str) -> dict:
    """JSON or YAML mapping text -> dict; raises ValueError with a readable message."""
    text = (text or "").strip()
    if not text:
        return {}
    if not text.startswith("{"):
        text = "{" + text + "}"  # allow 'padding: 4' without braces
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"params are not valid JSON/YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError('params must be a mapping like {"limit": 15}')
    return data


def step_state(name: str, p: float = 0.5, params: dict | None = None, defaults: dict | None = None) -> dict:
    """Session-state entries for one new step: its row in STEPS_KEY and its two widget values."""
    uid = new_uid()
    if params is None:
        params = dict((defaults or {}).get(name, {}))
    return {"row": {"uid": uid, "name": name}, f"aug:{uid}:p": float(p), f"aug:{uid}:params": params_text(params)}


def add_step(state: dict, name: str, defaults: dict | None = None, p: float = 0.5) -> None:
    entry = step_state(name, p=p, defaults=defaults)
    state[STEPS_KEY] = list(state.get(STEPS_KEY, [])) + [entry.pop("row")]
    state.update(entry)


def move_step(state: dict, index: int, delta: int) -> None:
    steps = list(state.get(STEPS_KEY, []))
    j = index + delta
    if 0 <= index < len(steps) and 0 <= j < len(steps):
        steps[index], steps[j] = steps[j], steps[index]
    state[STEPS_KEY] = steps


def remove_step(state: dict, index: int) -> None:
    steps = list(state.get(STEPS_KEY, []))
    if 0 <= index < len(steps):
        steps.pop(index)
    state[STEPS_KEY] = steps


def steps_from_state(state) -> tuple[list[dict], list[tuple[str, str]]]:
    """The pipeline as config dicts, plus parse errors keyed 'augment.train.<i>'."""
    steps, errors = [], []
    for i, row in enumerate(state.get(STEPS_KEY, [])):
        uid = row["uid"]
        try:
            params = parse_params(state.get(f"aug:{uid}:params", "{}"))
        except ValueError as exc:
            errors.append((f"augment.train.{i}", str(exc)))
            params = {}
        p = state.get(f"aug:{uid}:p", 0.5)
        steps.append({"name": row["name"], "p": 0.5 if p is None else float(p), "params": params})
    return steps, errors


# ------------------------------------------------------------------------------- whole form
def config_to_state(config: dict) -> dict:
    """A config dict (possibly partial) -> every session-state entry the builder needs to show it."""
    full = merge(default_config(), config)
    state: dict[str, Any] = {}
    for spec in field_specs():
        if spec.kind == "steps":
            continue
        state[spec.key] = to_widget(spec, get_path(full, spec.path, spec.default))
    rows = []
    for step in full.get("augment", {}).get("train", []) or []:
        entry = step_state(step["name"], step.get("p", 0.5), step.get("params", {}))
        rows.append(entry.pop("row"))
        state.update(entry)
    state[STEPS_KEY] = rows
    return state


def state_to_config(state, base: dict | None = None) -> tuple[dict, list[tuple[str, str]]]:
    """Session state (widget values) -> config dict and parse errors [(field, message)].

    Fields whose widget is not in `state` (hidden because irrelevant) keep their value from `base`
    (the last config the builder produced), else the default."""
    config = merge(default_config(), base or {})
    errors: list[tuple[str, str]] = []
    for spec in field_specs():
        if spec.kind == "steps":
            continue
        if spec.key not in state:
            continue
        try:
            set_path(config, spec.path, from_widget(spec, state[spec.key]))
        except ValueError as exc:
            errors.append((spec.path, str(exc)))
    steps, step_errors = steps_from_state(state)
    config.setdefault("augment", {})["train"] = steps
    return config, errors + step_errors


def merge(base: dict, over: dict) -> dict:
    """Deep merge of plain dicts (over wins); lists are replaced, not merged."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------------------- relevance
# A field is shown only when it can matter for the config being built; hidden fields keep their value.
_RELEVANT: dict[str, Callable[[dict], bool]] = {
    "data.fold": lambda c: bool(get_path(c, "data.kfold")),
    "model.pretrained": lambda c: get_path(c, "model.source") != "custom",
    "model.weights_path": lambda c: get_path(c, "model.source") != "custom" and bool(get_path(c, "model.pretrained")),
    "model.small_stem": lambda c: not _is_small_cnn(c),
    "model.stride1_stages": lambda c: not _is_small_cnn(c) and bool(get_path(c, "model.small_stem")),
    "model.widths": lambda c: _is_custom_resnet(c),
    "model.depths": lambda c: _is_custom_resnet(c),
    "model.se": lambda c: _is_custom_resnet(c),
    "model.drop_path": lambda c: not _is_small_cnn(c),
    "model.shakedrop": lambda c: _is_custom_resnet(c),
    "model.head.hidden": lambda c: get_path(c, "model.head.kind") == "mlp",
    "model.freeze.unfreeze_last": lambda c: (get_path(c, "model.freeze.epochs") or 0) > 0,
    "augment.mixup.prob": lambda c: _mixing(c),
    "augment.mixup.switch_prob": lambda c: (
        (get_path(c, "augment.mixup.mixup_alpha") or 0) > 0 and (get_path(c, "augment.mixup.cutmix_alpha") or 0) > 0
    ),
    "augment.mixup.stop_epoch": lambda c: _mixing(c),
    "optim.momentum": lambda c: get_path(c, "optim.name") in ("sgd", "rmsprop"),
    "optim.nesterov": lambda c: get_path(c, "optim.name") == "sgd",
    "optim.betas": lambda c: get_path(c, "optim.name") in ("adam", "adamw"),
    "optim.eps": lambda c: get_path(c, "optim.name") != "sgd",
    "optim.switch_to_sgd_epoch": lambda c: get_path(c, "optim.name") != "sgd",
    "optim.sgd_lr": lambda c: (
        get_path(c, "optim.name") != "sgd" and get_path(c, "optim.switch_to_sgd_epoch") is not None
    ),
    "schedule.t_max": lambda c: get_path(c, "schedule.name") == "cosine",
    "schedule.eta_min": lambda c: get_path(c, "schedule.name") == "cosine",
    "schedule.milestones": lambda c: get_path(c, "schedule.name") == "multistep",
    "schedule.gamma": lambda c: get_path(c, "schedule.name") in ("multistep", "step"),
    "schedule.step_size": lambda c: get_path(c, "schedule.name") == "step",
    "schedule.plateau_metric": lambda c: get_path(c, "schedule.name") == "plateau",
    "schedule.plateau_patience": lambda c: get_path(c, "schedule.name") == "plateau",
    "schedule.plateau_cooldown": lambda c: get_path(c, "schedule.name") == "plateau",
    "schedule.plateau_factor": lambda c: get_path(c, "schedule.name") == "plateau",
    "schedule.onecycle_pct_start": lambda c: get_path(c, "schedule.name") == "onecycle",
    "schedule.warmup_start_factor": lambda c: (get_path(c, "schedule.warmup_epochs") or 0) > 0,
    "loss.focal_gamma": lambda c: get_path(c, "loss.name") == "focal",
    "loss.focal_alpha": lambda c: get_path(c, "loss.name") == "focal",
    "regularize.ema.decay": lambda c: bool(get_path(c, "regularize.ema.enabled")),
    "regularize.ema.evaluate_ema": lambda c: bool(get_path(c, "regularize.ema.enabled")),
    "regularize.early_stopping.metric": lambda c: bool(get_path(c, "regularize.early_stopping.enabled")),
    "regularize.early_stopping.patience": lambda c: bool(get_path(c, "regularize.early_stopping.enabled")),
    "regularize.early_stopping.min_delta": lambda c: bool(get_path(c, "regularize.early_stopping.enabled")),
    "train.init_checkpoint": lambda c: get_path(c, "train.init_from_run") is not None,
    "train.amp": lambda c: get_path(c, "train.device") != "cpu",
    "eval.tta_passes": lambda c: bool({"random_mean", "random_vote"} & set(get_path(c, "eval.tta") or [])),
}


def _is_small_cnn(c) -> bool:
    return get_path(c, "model.source") == "custom" and get_path(c, "model.name") == "small_cnn"


def _is_custom_resnet(c) -> bool:
    return get_path(c, "model.source") == "custom" and get_path(c, "model.name") == "resnet"


def _mixing(c) -> bool:
    return (get_path(c, "augment.mixup.mixup_alpha") or 0) > 0 or (get_path(c, "augment.mixup.cutmix_alpha") or 0) > 0


def is_relevant(spec: FieldSpec, config: dict) -> bool:
    rule = _RELEVANT.get(spec.path)
    return True if rule is None else bool(rule(config))


def model_name_options(source: str, current: str | None, catalogue: list[str] | None = None) -> list[str]:
    """Names offered for a model family: ours, or suggestions first then the library's catalogue."""
    if source == "custom":
        names = list(CUSTOM_MODELS)
    else:
        names = list(TIMM_SUGGESTIONS if source == "timm" else TORCHVISION_SUGGESTIONS)
        names += [n for n in (catalogue or []) if n not in names]
    if current and current not in names:
        names.insert(0, current)
    return names


# ------------------------------------------------------------------------------- errors
_FIELD_IN_MESSAGE = re.compile(r"^((?:{})(?:\.[A-Za-z_0-9]+)+)\s*:?\s*".format("|".join(k for k, _ in SECTIONS)))


def error_field(loc: str, message: str) -> tuple[str, str]:
    """(field, message) as reported -> (the field it is about, the message without the field name).

    Cross-field rules are reported on the whole config ("(root)") with the field named in the
    message ("schedule.milestones: 12 is beyond..."); that field is where the error belongs."""
    m = _FIELD_IN_MESSAGE.match(message or "")
    if loc in ("(root)", "", None) and m:
        return m.group(1), message[m.end() :] if message[m.end() :] else message
    if m and m.group(1) == loc:
        return loc, message[m.end() :] or message
    return (loc or "(root)"), message


def normalise_errors(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [error_field(str(loc), str(msg)) for loc, msg in errors]


def errors_by_section(errors: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for field, msg in normalise_errors(errors):
        out.setdefault(section_of(field), []).append((field, msg))
    return out


def field_label(path: str) -> str:
    if path in LABELS:
        return LABELS[path]
    m = re.match(r"augment\.train\.(\d+)", path)
    if m:
        return f"Augmentation step {int(m.group(1)) + 1}"
    return path if path != "(root)" else "Config"


def split_errors(errors: list[tuple[str, str]], shown_paths: set[str]):
    """-> (errors per shown field path, the rest). A field owns errors on itself and its sub-paths
    (model.widths owns model.widths.2); augmentation steps own augment.train.<i>."""
    by_field: dict[str, list[str]] = {}
    rest: list[tuple[str, str]] = []
    for field, msg in normalise_errors(errors):
        owner = next(
            (p for p in sorted(shown_paths, key=len, reverse=True) if field == p or field.startswith(p + ".")), None
        )
        if owner is None:
            rest.append((field, msg))
        else:
            by_field.setdefault(owner, []).append(msg)
    return by_field, rest


def summary_lines(errors: list[tuple[str, str]]) -> list[str]:
    return [f"**{SECTION_TITLES[section_of(f)]} › {field_label(f)}**: {m}" for f, m in normalise_errors(errors)]


# ------------------------------------------------------------------------------- run metadata & files
def parse_tags(text: str) -> list[str]:
    return [t.strip() for t in re.split(r"[,\n]", text or "") if t.strip()]


def config_yaml(config: dict) -> str | None:
    """YAML of a schema-valid config (what `python -m engine train x.yaml` reads), else None."""
    from engine.config import ConfigError, parse_config

    try:
        return parse_config(config).to_yaml()
    except ConfigError:
        return None


def config_from_upload(data: bytes) -> tuple[dict | None, list[tuple[str, str]]]:
    """An uploaded YAML/JSON file -> (config dict, []) or (None, errors)."""
    from engine.config import ConfigError, ExperimentConfig

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, [("(root)", "the file is not UTF-8 text")]
    try:
        cfg = ExperimentConfig.from_yaml(text)
    except ConfigError as exc:
        return None, exc.errors
    except yaml.YAMLError as exc:
        return None, [("(root)", f"not valid YAML/JSON: {str(exc).splitlines()[0]}")]
    return cfg.model_dump(mode="json"), []


# ------------------------------------------------------------------------------- presets
def available_presets() -> dict[str, str]:
    """name -> description, from control.presets when it exists (optional module)."""
    try:
        from control.presets import PRESETS
    except Exception:  # not there yet, or broken: the builder works without presets
        return {}
    return dict(PRESETS)


def preset(
    name: str, dataset: str, image_size: int | None = None, num_classes: int | None = None
) -> tuple[dict, list[str]]:
    """The preset's config for this dataset, and what it adapted (notes; empty when not provided)."""
    from control import presets

    config = presets.preset_config(name, dataset, image_size=image_size, num_classes=num_classes)
    notes_fn = getattr(presets, "preset_notes", None)
    notes = list(notes_fn(name, dataset, image_size=image_size, num_classes=num_classes)) if notes_fn else []
    return config, notes


def dataset_shape(summary: dict | None) -> tuple[int | None, int | None]:
    """(image side, number of classes) from a registered dataset's summary, where known."""
    summary = summary or {}
    shape = summary.get("image_shape") or [None]
    return (int(shape[0]) if shape[0] else None), summary.get("num_classes")


# ------------------------------------------------------------------------------- runs table filters
def filter_runs(df, statuses=None, datasets=None, text: str = "", tags=None):
    """Rows of db.queries.list_runs matching every given filter (empty filter = no constraint)."""
    if df is None or df.empty:
        return df
    mask = df["id"].notna()
    if statuses:
        mask &= df["status"].isin(statuses)
    if datasets:
        mask &= df["dataset"].isin(datasets)
    if tags:
        wanted = set(tags)
        mask &= df["tags"].apply(lambda t: bool(wanted & set(t or [])))
    text = (text or "").strip().lower()
    if text:
        hay = (
            df["id"].astype(str)
            + " "
            + df["name"].fillna("")
            + " "
            + df["model"].fillna("")
            + " "
            + df["dataset"].fillna("")
            + " "
            + df["notes"].fillna("")
            + " "
            + df["tags"].apply(lambda t: " ".join(t or []))
        ).str.lower()
        mask &= hay.str.contains(text, regex=False)
    return df[mask]


def config_summary(config: dict) -> str:
    """One line a person can scan: what data, which model, how it is trained."""
    g = lambda p, d=None: get_path(config, p, d)  # noqa: E731
    steps = [s.get("name", "?") for s in (g("augment.train") or [])]
    parts = [
        f"{g('data.dataset')}" + (f" @ {g('data.image_size')} px" if g("data.image_size") else ""),
        f"{g('model.source')}:{g('model.name')}" + (" (pretrained)" if g("model.pretrained") else ""),
        f"{g('optim.name')} lr {g('optim.lr'):g}"
        + (f", wd {g('optim.weight_decay'):g}" if g("optim.weight_decay") else ""),
        f"{g('schedule.name')} schedule" if g("schedule.name") != "none" else "constant LR",
        f"{g('train.epochs')} epochs × batch {g('train.batch_size')}",
        ("aug: " + " → ".join(steps)) if steps else "no augmentation",
    ]
    if g("augment.mixup.mixup_alpha") or g("augment.mixup.cutmix_alpha"):
        parts.append("mixup/cutmix")
    if g("loss.label_smoothing"):
        parts.append(f"smoothing {g('loss.label_smoothing'):g}")
    return " · ".join(parts)


def available_backends() -> list[str]:
    """Launcher backends usable from here: the default first (LAB_BACKEND), Slurm only on a submit host."""
    import os
    import shutil

    backends = ["local"] + (["slurm"] if shutil.which("sbatch") else [])
    default = os.environ.get("LAB_BACKEND", "local")
    return sorted(backends, key=lambda b: b != default)
