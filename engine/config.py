"""ExperimentConfig: the one contract between the dashboard, the database and the engine.

The dashboard builds it, the DB stores it verbatim (JSON) on the run, the engine reads only it.
Every field has a type and a range; cross-field rules live in `model_validator`s and name the field
they are about (`field_error`), so a bad config is refused, field by field, before anything runs.
Each field also carries how the run builder shows it (`ui(...)`: label, help, advanced, step,
show-if), so the dashboard keeps no list of fields of its own. Rules that need the outside world
(does the dataset exist, is the batch larger than the training split, are pretrained weights
available offline) live in `control.preflight`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# A show-if condition: {dotted path: test, ...} where every test holds, or a list of such dicts of
# which one must hold. A test is a value (equal), a list (one of them; for a list field, any
# element), {"gt": n}, {"set": True} (not None) or {"not": test}.
ShowIf = dict[str, Any] | list[dict[str, Any]]


def ui(
    label: str,
    *,
    help: str | None = None,
    advanced: bool = False,
    step: float | None = None,
    show_if: ShowIf | None = None,
    widget: str | None = None,
) -> dict[str, Any]:
    """How the run builder shows a field, kept on the field itself (json_schema_extra) so that a new
    field appears in the builder without an edit of the dashboard. help defaults to the description;
    widget names a special editor ("model_name", "dataset")."""
    extra = {"label": label, "help": help, "advanced": advanced, "step": step, "show_if": show_if, "widget": widget}
    return {"ui": {k: v for k, v in extra.items() if v is not None and v is not False}}


def field_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule's refusal located on the field it is about (dotted, relative to the model
    whose validator raises it), so errors_from_validation reports it there and not on the whole model."""
    return PydanticCustomError("cross_field", "{message}", {"field": field, "message": message})


CUSTOM_RESNET: ShowIf = {"model.source": "custom", "model.name": "resnet"}
LIBRARY_MODEL: ShowIf = {"model.source": {"not": "custom"}}
# Fields refused where they do nothing for the chosen model, and hidden there by their show-if: the
# builder puts a hidden one back to its default (a value left from another model would be refused).
MODEL_DEPENDENT_FIELDS = (
    "model.small_stem",
    "model.stride1_stages",
    "model.stem_kernel",
    "model.stem_stride",
    "model.stem_width",
    "model.se",
    "model.depths",
    "model.shakedrop",
    "model.drop_path",
    "model.hub_architecture",
)
# the stem's kernel and stride: the custom ResNet's own stem, or the small-image stem of a library model
STEM_SHAPE: ShowIf = [CUSTOM_RESNET, {"model.source": {"not": "custom"}, "model.small_stem": True}]
NOT_SMALL_CNN: ShowIf = [{"model.source": {"not": "custom"}}, {"model.name": {"not": "small_cnn"}}]
EARLY_STOPPING: ShowIf = {"regularize.early_stopping.enabled": True}
MIXING: ShowIf = [{"augment.mixup.mixup_alpha": {"gt": 0}}, {"augment.mixup.cutmix_alpha": {"gt": 0}}]


class Section(BaseModel):
    # Unknown keys are typos, not options: refuse them so "lerning_rate" never silently does nothing.
    # Numbers and switches are pydantic's strict types (StrictInt, StrictFloat, StrictBool): a value is
    # taken as given, never coerced. `epochs: true` is not 1 epoch, `lr: true` not 1.0, `stratified: 1`
    # not True, 2.0 or "2" not an int; a float field still takes an int (lr: 1). Containers stay lax
    # (a JSON list fills optim.betas), their elements are strict too.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------- data
class DataConfig(Section):
    dataset: str = Field(
        "digits",
        min_length=1,
        max_length=200,
        description="Registered dataset name",
        json_schema_extra=ui("Dataset", widget="dataset"),
    )
    val_fraction: StrictFloat = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="Share of the training split held out for validation",
        json_schema_extra=ui("Validation share (of train)", step=0.05),
    )
    stratified: StrictBool = Field(True, json_schema_extra=ui("Stratified splits", advanced=True))
    split_seed: StrictInt = Field(0, ge=0, le=2**31 - 1, json_schema_extra=ui("Split seed", advanced=True))
    test_fraction: StrictFloat = Field(
        0.2,
        gt=0.0,
        le=0.5,
        description="Used only when the dataset has no test split of its own",
        json_schema_extra=ui("Test share (no test split only)", advanced=True, step=0.05),
    )
    image_size: StrictInt | None = Field(
        None,
        ge=4,
        le=1024,
        description="Resize images to this square size; None keeps them",
        json_schema_extra=ui("Image size [px, square]"),
    )
    channels: Literal["auto", 1, 3] = Field(
        "auto", description="Force grey (1) or colour (3) input", json_schema_extra=ui("Channels", advanced=True)
    )
    normalize: Literal["dataset", "imagenet", "none", "custom"] = Field(
        "dataset",
        description="dataset = mean/std of the training split; custom = data.mean / data.std as given",
        json_schema_extra=ui("Normalisation", advanced=True),
    )
    mean: list[StrictFloat] | None = Field(
        None,
        max_length=3,
        description="Per-channel mean (pixels in [0, 1]) for normalize: custom",
        json_schema_extra=ui(
            "Normalisation mean (per channel)",
            advanced=True,
            help="comma-separated, one per channel, e.g. 0.16, 0.16, 0.16",
            show_if={"data.normalize": "custom"},
        ),
    )
    std: list[StrictFloat] | None = Field(
        None,
        max_length=3,
        description="Per-channel std (> 0) for normalize: custom",
        json_schema_extra=ui(
            "Normalisation std (per channel)",
            advanced=True,
            help="comma-separated, one per channel, each > 0, e.g. 0.12, 0.1, 0.1",
            show_if={"data.normalize": "custom"},
        ),
    )
    kfold: StrictInt | None = Field(
        None,
        ge=2,
        le=20,
        description="K-fold cross-validation: K folds of train+val",
        json_schema_extra=ui("K-fold: number of folds", advanced=True),
    )
    fold: StrictInt = Field(
        0,
        ge=0,
        le=19,
        description="Which fold is the validation fold",
        json_schema_extra=ui("Validation fold", advanced=True, show_if={"data.kfold": {"set": True}}),
    )
    train_on_val: StrictBool = Field(
        False,
        description="Retrain on train+val (final model); val metrics are then optimistic",
        json_schema_extra=ui("Retrain on train + val", advanced=True),
    )
    max_train_samples: StrictInt | None = Field(
        None,
        ge=1,
        le=10**9,
        description="Cap the training split (quick experiments)",
        json_schema_extra=ui("Cap training images", advanced=True),
    )

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_not_a_bool(cls, value):
        if isinstance(value, bool):  # a Literal's 1 matches True even in strict mode
            raise PydanticCustomError("literal_error", f"Input should be 'auto', 1 or 3, got {json.dumps(value)}")
        return value

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.kfold is not None and self.fold >= self.kfold:
            raise field_error("fold", f"must be < kfold ({self.kfold})")
        if self.kfold is not None and self.train_on_val:
            raise field_error("train_on_val", "train_on_val and kfold are exclusive")
        self._check_custom_normalisation()
        return self

    def _check_custom_normalisation(self) -> None:
        if self.normalize != "custom":
            for name in ("mean", "std"):
                if getattr(self, name) is not None:
                    raise field_error(name, "is used only with data.normalize: custom")
            return
        for name in ("mean", "std"):
            if not getattr(self, name):
                raise field_error(name, "normalize: custom needs one value per channel")
        if len(self.mean) != len(self.std):
            raise field_error("std", f"has {len(self.std)} values but mean has {len(self.mean)}; one per channel each")
        if self.channels != "auto" and len(self.mean) != self.channels:
            raise field_error("mean", f"has {len(self.mean)} values but channels is {self.channels}")
        if any(v <= 0 for v in self.std):
            raise field_error("std", "every std must be > 0")
        if any(not -10.0 <= v <= 10.0 for v in self.mean + self.std):
            raise field_error("mean", "values are pixel statistics in [0, 1]: keep them within [-10, 10]")


# ---------------------------------------------------------------------------------------- model
class HeadConfig(Section):
    kind: Literal["linear", "mlp"] = Field(
        "linear", json_schema_extra=ui("Head", advanced=True, help="linear, or an MLP with the hidden sizes below")
    )
    hidden: list[StrictInt] = Field(
        default_factory=lambda: [256],
        max_length=4,
        json_schema_extra=ui(
            "Head hidden sizes",
            advanced=True,
            help="comma-separated, e.g. 512, 256",
            show_if={"model.head.kind": "mlp"},
        ),
    )
    dropout: StrictFloat = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout before each linear layer of the head",
        json_schema_extra=ui("Head dropout", advanced=True),
    )

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v):
        if any(h < 1 or h > 16384 for h in v):
            raise ValueError("hidden sizes must be between 1 and 16384")
        return v


class FreezeConfig(Section):
    epochs: StrictInt = Field(
        0,
        ge=0,
        le=10000,
        description="Train only the head for this many epochs",
        json_schema_extra=ui("Head-only epochs", advanced=True),
    )
    unfreeze_last: StrictInt | None = Field(
        None,
        ge=0,
        le=100_000,
        description="After that, unfreeze only the last N parameter tensors of the backbone (None = all)",
        json_schema_extra=ui("Then unfreeze last N tensors", advanced=True, show_if={"model.freeze.epochs": {"gt": 0}}),
    )


class ModelConfig(Section):
    source: Literal["custom", "timm", "torchvision"] = Field(
        "custom",
        json_schema_extra=ui(
            "Model family", help="custom: our small CNN / ResNet; timm or torchvision: any model by name."
        ),
    )
    name: str = Field(
        "small_cnn",
        min_length=1,
        max_length=200,
        json_schema_extra=ui(
            "Architecture",
            widget="model_name",
            help="custom: small_cnn or resnet. timm / torchvision: any model name (type to search or enter a new one).",
        ),
    )
    pretrained: StrictBool = Field(
        False, json_schema_extra=ui("Pretrained weights", show_if={"model.source": {"not": "custom"}})
    )
    weights_path: str | None = Field(
        None,
        max_length=4096,
        description="Local weights file for pretrained models",
        json_schema_extra=ui(
            "Local weights file",
            advanced=True,
            show_if={"model.source": {"not": "custom"}, "model.pretrained": True},
        ),
    )
    hub_architecture: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="For an hf-hub:org/repo model.name: the repo's timm architecture (e.g. convnext_tiny), which "
        "builds it offline when the repo's config is not in the Hugging Face cache (weights from model.weights_path)",
        json_schema_extra=ui("Hub model's timm architecture", advanced=True, show_if={"model.source": "timm"}),
    )
    small_stem: StrictBool = Field(
        False,
        description="timm / torchvision CNNs: a stem_kernel x stem_kernel, stride stem_stride first conv, "
        "no maxpool (for small images; the custom ResNet always has one)",
        json_schema_extra=ui("Small-image stem", show_if=LIBRARY_MODEL),
    )
    stride1_stages: StrictInt = Field(
        0,
        ge=0,
        le=4,
        description="Also set stride 1 in the first N stride-2 stages",
        json_schema_extra=ui("Stride-1 stages", advanced=True, show_if=LIBRARY_MODEL | {"model.small_stem": True}),
    )
    stem_kernel: StrictInt = Field(
        3,
        ge=1,
        le=7,
        description="Kernel size of the small-image stem's conv (odd: 1, 3, 5 or 7)",
        json_schema_extra=ui("Stem kernel [px]", advanced=True, show_if=STEM_SHAPE),
    )
    stem_stride: StrictInt = Field(
        1,
        ge=1,
        le=4,
        description="Stride of the small-image stem's conv",
        json_schema_extra=ui("Stem stride", advanced=True, show_if=STEM_SHAPE),
    )
    stem_width: StrictInt | None = Field(
        None,
        ge=1,
        le=4096,
        description="Custom ResNet: the stem's output channels (None = the first stage's width)",
        json_schema_extra=ui("Stem width [channels]", advanced=True, show_if=CUSTOM_RESNET),
    )
    # custom resnet family
    widths: list[StrictInt] = Field(
        default_factory=lambda: [64, 128, 256, 512],
        min_length=1,
        max_length=6,
        json_schema_extra=ui(
            "Stage widths [channels]",
            help="comma-separated channels per stage, e.g. 64, 128, 256, 512",
            show_if=CUSTOM_RESNET,
        ),
    )
    depths: list[StrictInt] = Field(
        default_factory=lambda: [2, 2, 2, 2],
        min_length=1,
        max_length=6,
        json_schema_extra=ui(
            "Stage depths [blocks]",
            help="comma-separated residual blocks per stage, e.g. 2, 2, 2, 2",
            show_if=CUSTOM_RESNET,
        ),
    )
    se: StrictBool = Field(
        False,
        description="Squeeze-and-excitation blocks",
        json_schema_extra=ui("Squeeze-and-excitation", show_if=CUSTOM_RESNET),
    )
    drop_path: StrictFloat = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Stochastic depth, max rate (linear over blocks)",
        json_schema_extra=ui("Stochastic depth (max rate)", show_if=NOT_SMALL_CNN),
    )
    shakedrop: StrictFloat = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="ShakeDrop max drop probability, linear over the residual blocks (custom ResNet; torchvision "
        "ResNet family, EfficientNet(V2), ConvNeXt; timm models with residual blocks: ResNets, EfficientNets, "
        "MobileNetV2-V4, ConvNeXt)",
        json_schema_extra=ui("ShakeDrop (max p)", advanced=True, show_if=[CUSTOM_RESNET, LIBRARY_MODEL]),
    )
    dropout: StrictFloat = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout before the classifier",
        json_schema_extra=ui("Dropout before classifier"),
    )
    head: HeadConfig = Field(default_factory=HeadConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    backbone_lr_mult: StrictFloat = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="Backbone LR = optimizer LR x this",
        json_schema_extra=ui("Backbone LR multiplier [x]", advanced=True),
    )

    @field_validator("widths", "depths")
    @classmethod
    def _positive_list(cls, v):
        if any(x < 1 or x > 4096 for x in v):
            raise ValueError("values must be between 1 and 4096")
        return v

    @model_validator(mode="after")
    def _same_length(self):
        if self.source == "custom" and self.name == "resnet" and len(self.widths) != len(self.depths):
            raise field_error(
                "depths",
                f"has {len(self.depths)} stages but widths has {len(self.widths)}; they must have the same length",
            )
        self._model_dependent_fields()
        return self

    def _model_dependent_fields(self) -> None:
        """A field that does nothing for the chosen model is refused, saying where it applies (the
        architecture-level cases, e.g. ShakeDrop on a torchvision EfficientNet, are refused when the
        model is built: engine.models.zoo)."""
        resnet = self.source == "custom" and self.name == "resnet"
        small_cnn = self.source == "custom" and self.name == "small_cnn"
        fields = type(self).model_fields
        changed = {f for f in ("widths", "depths") if getattr(self, f) != fields[f].default_factory()}
        if self.source == "custom" and self.small_stem:
            raise field_error(
                "small_stem",
                "custom models already have a small-image stem (set stem_kernel / stem_stride / stem_width "
                "for the custom ResNet); small_stem adapts timm and torchvision CNNs",
            )
        if self.stride1_stages and not (self.source != "custom" and self.small_stem):
            raise field_error("stride1_stages", "applies with small_stem, to timm and torchvision CNNs")
        if (self.stem_kernel, self.stem_stride) != (3, 1):
            if self.stem_kernel % 2 == 0:
                raise field_error("stem_kernel", f"must be odd (1, 3, 5 or 7), got {self.stem_kernel}")
            if not (resnet or (self.source != "custom" and self.small_stem)):
                name = "stem_kernel" if self.stem_kernel != 3 else "stem_stride"
                raise field_error(name, "applies to the custom ResNet's stem, or with small_stem to timm/torchvision")
        if self.hub_architecture is not None and not (self.source == "timm" and self.name.startswith("hf-hub:")):
            raise field_error("hub_architecture", "applies to timm models named hf-hub:org/repo")
        if self.stem_width is not None and not resnet:
            raise field_error("stem_width", "applies to the custom ResNet (model.name: resnet)")
        if self.se and not resnet:
            raise field_error("se", "squeeze-and-excitation blocks are part of the custom ResNet only")
        if "depths" in changed and not resnet:
            raise field_error("depths", "applies to the custom ResNet (model.name: resnet)")
        if "widths" in changed and self.source != "custom":
            raise field_error("widths", "applies to the custom models (small_cnn uses the first width)")
        tv_shakedrop = self.source == "torchvision" and self.name.startswith(
            ("resnet", "resnext", "wide_resnet", "efficientnet", "convnext")
        )
        # timm: any model whose blocks add a drop_path'd residual branch; which ones is decided when it is built
        if self.shakedrop > 0 and not (resnet or tv_shakedrop or self.source == "timm"):
            raise field_error(
                "shakedrop",
                "ShakeDrop is available on the custom ResNet, torchvision ResNet / ResNeXt / Wide ResNet, "
                "EfficientNet / EfficientNetV2 and ConvNeXt, and timm models with residual blocks "
                "(ResNets, EfficientNets, MobileNetV2-V4, ConvNeXt)",
            )
        if self.drop_path > 0 and small_cnn:
            raise field_error(
                "drop_path",
                "small_cnn has no residual blocks to drop; use the custom ResNet or a timm/torchvision model",
            )


# ---------------------------------------------------------------------------------- augmentation
class AugmentStep(Section):
    name: str = Field(..., min_length=1, max_length=100, description="albumentations transform class name")
    p: StrictFloat = Field(0.5, ge=0.0, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_transform(self):
        from engine.augment import check_transform  # lazy: albumentations import is slow

        check_transform(self.name, self.params)
        return self


class MixupConfig(Section):
    mixup_alpha: StrictFloat = Field(
        0.0, ge=0.0, le=10.0, json_schema_extra=ui("Mixup alpha", help="0 = off; 0.2 to 1 are common")
    )
    cutmix_alpha: StrictFloat = Field(
        0.0, ge=0.0, le=10.0, json_schema_extra=ui("CutMix alpha", help="0 = off; 1 is common")
    )
    prob: StrictFloat = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Probability of applying mixup or cutmix to a batch",
        json_schema_extra=ui("Mix probability (per batch)", show_if=MIXING),
    )
    switch_prob: StrictFloat = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Probability of cutmix instead of mixup when both are on",
        json_schema_extra=ui(
            "CutMix instead of Mixup (prob.)",
            show_if={"augment.mixup.mixup_alpha": {"gt": 0}, "augment.mixup.cutmix_alpha": {"gt": 0}},
        ),
    )
    stop_epoch: StrictInt | None = Field(
        None,
        ge=0,
        le=10000,
        description="Turn mixup/cutmix off from this epoch on",
        json_schema_extra=ui("Stop mixing at epoch", show_if=MIXING),
    )

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


class AugmentConfig(Section):
    train: list[AugmentStep] = Field(
        default_factory=list, max_length=50, json_schema_extra=ui("Training augmentation pipeline")
    )
    mixup: MixupConfig = Field(default_factory=MixupConfig)
    fast_path: Literal["auto", "off"] = Field(
        "auto",
        description="Batched tensor augmentation when every step has a batched version",
        json_schema_extra=ui("Batched GPU augmentation", advanced=True),
    )


# ------------------------------------------------------------------------------------ optimizer
class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = Field("adamw", json_schema_extra=ui("Optimizer"))
    lr: StrictFloat = Field(1e-3, gt=0.0, le=10.0, json_schema_extra=ui("Learning rate", step=1e-4))
    momentum: StrictFloat = Field(
        0.9,
        ge=0.0,
        lt=1.0,
        json_schema_extra=ui("Momentum", help="SGD and RMSprop", step=0.01, show_if={"optim.name": ["sgd", "rmsprop"]}),
    )
    nesterov: StrictBool = Field(
        False, json_schema_extra=ui("Nesterov", help="SGD with momentum only", show_if={"optim.name": "sgd"})
    )
    weight_decay: StrictFloat = Field(
        0.0,
        ge=0.0,
        le=1.0,
        json_schema_extra=ui("Weight decay", help="decoupled for AdamW, L2 for the others", step=1e-4),
    )
    betas: tuple[StrictFloat, StrictFloat] = Field(
        (0.9, 0.999),
        json_schema_extra=ui(
            "Betas (β1, β2)",
            help="two numbers in [0, 1), e.g. 0.9, 0.999",
            show_if={"optim.name": ["adam", "adamw"]},
        ),
    )
    eps: StrictFloat = Field(
        1e-8,
        gt=0.0,
        le=1.0,
        json_schema_extra=ui("Epsilon", advanced=True, step=1e-9, show_if={"optim.name": {"not": "sgd"}}),
    )
    switch_to_sgd_epoch: StrictInt | None = Field(
        None,
        ge=1,
        le=10000,
        description="Adam-family -> SGD at this epoch (SWATS-style)",
        json_schema_extra=ui("Switch to SGD at epoch", advanced=True, show_if={"optim.name": {"not": "sgd"}}),
    )
    sgd_lr: StrictFloat | None = Field(
        None,
        gt=0.0,
        le=10.0,
        description="LR after the switch (default: lr)",
        json_schema_extra=ui(
            "LR after the switch",
            advanced=True,
            step=1e-4,
            show_if={"optim.name": {"not": "sgd"}, "optim.switch_to_sgd_epoch": {"set": True}},
        ),
    )
    grad_clip: StrictFloat | None = Field(
        None,
        gt=0.0,
        le=1e6,
        description="Clip the global grad norm",
        json_schema_extra=ui("Clip gradient norm at", advanced=True),
    )
    accumulate: StrictInt = Field(
        1,
        ge=1,
        le=1024,
        description="Gradient accumulation steps",
        json_schema_extra=ui("Gradient accumulation [steps]", advanced=True),
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, v):
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("betas must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _nesterov(self):
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise field_error("nesterov", "needs optimizer sgd with momentum > 0")
        if self.switch_to_sgd_epoch is not None and self.name == "sgd":
            raise field_error("switch_to_sgd_epoch", "needs an Adam-family optimizer")
        return self


# ------------------------------------------------------------------------------------- schedule
class ScheduleConfig(Section):
    name: Literal["none", "cosine", "multistep", "step", "plateau", "onecycle"] = Field(
        "none", json_schema_extra=ui("Schedule")
    )
    warmup_epochs: StrictInt = Field(
        0,
        ge=0,
        le=10000,
        description="Linear warmup from warmup_start_factor x lr",
        json_schema_extra=ui("Warmup [epochs]"),
    )
    warmup_start_factor: StrictFloat = Field(
        0.1,
        gt=0.0,
        le=1.0,
        json_schema_extra=ui("Warmup starts at [x LR]", advanced=True, show_if={"schedule.warmup_epochs": {"gt": 0}}),
    )
    t_max: StrictInt | None = Field(
        None,
        ge=1,
        le=10000,
        description="Cosine period in epochs (default: epochs - warmup)",
        json_schema_extra=ui("Cosine period [epochs]", show_if={"schedule.name": "cosine"}),
    )
    eta_min: StrictFloat = Field(
        0.0, ge=0.0, le=10.0, json_schema_extra=ui("Minimum LR", step=1e-5, show_if={"schedule.name": "cosine"})
    )
    milestones: list[StrictInt] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra=ui(
            "Milestones [epochs]",
            help="comma-separated epochs where LR is multiplied by gamma, e.g. 30, 60",
            show_if={"schedule.name": "multistep"},
        ),
    )
    gamma: StrictFloat = Field(
        0.1,
        gt=0.0,
        le=1.0,
        json_schema_extra=ui("Decay factor (gamma)", show_if={"schedule.name": ["multistep", "step"]}),
    )
    step_size: StrictInt = Field(
        10, ge=1, le=10000, json_schema_extra=ui("Step size [epochs]", show_if={"schedule.name": "step"})
    )
    plateau_metric: Literal["val_loss", "val_acc"] = Field(
        "val_loss", json_schema_extra=ui("Plateau: watch", show_if={"schedule.name": "plateau"})
    )
    plateau_patience: StrictInt = Field(
        5, ge=0, le=10000, json_schema_extra=ui("Plateau: patience [epochs]", show_if={"schedule.name": "plateau"})
    )
    plateau_cooldown: StrictInt = Field(
        0,
        ge=0,
        le=10000,
        json_schema_extra=ui("Plateau: cooldown [epochs]", advanced=True, show_if={"schedule.name": "plateau"}),
    )
    plateau_factor: StrictFloat = Field(
        0.1, gt=0.0, lt=1.0, json_schema_extra=ui("Plateau: factor", show_if={"schedule.name": "plateau"})
    )
    onecycle_pct_start: StrictFloat = Field(
        0.3, gt=0.0, lt=1.0, json_schema_extra=ui("One-cycle: rising share", show_if={"schedule.name": "onecycle"})
    )
    start_after_freeze: StrictBool = Field(
        False,
        description="The schedule (with its warmup) starts when the backbone unfreezes: the head-only epochs "
        "train at the base LR, and cosine periods, milestones and step sizes count from the first unfrozen epoch",
        json_schema_extra=ui("Start the schedule after the head-only epochs", advanced=True),
    )

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, v):
        if any(m < 1 for m in v) or v != sorted(set(v)):
            raise ValueError("milestones must be positive, increasing and unique")
        return v

    @model_validator(mode="after")
    def _onecycle_warmup(self):
        if self.name == "onecycle" and self.warmup_epochs:
            raise field_error(
                "warmup_epochs", "one-cycle has its own warmup (onecycle_pct_start); set warmup_epochs to 0"
            )
        return self


# ----------------------------------------------------------------------------------------- loss
class LossConfig(Section):
    name: Literal["ce", "focal", "poly1"] = Field("ce", json_schema_extra=ui("Loss"))
    label_smoothing: StrictFloat = Field(
        0.0, ge=0.0, lt=1.0, json_schema_extra=ui("Label smoothing", help="0 = none; 0.1 is a common choice")
    )
    smoothing_end: StrictFloat | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Label smoothing moves from label_smoothing to this, as smoothing_schedule says",
        json_schema_extra=ui("Smoothing at the end", advanced=True),
    )
    smoothing_schedule: Literal["linear", "step", "plateau"] = Field(
        "linear",
        description="linear: to smoothing_end by the last epoch; step: at each of smoothing_milestones the distance "
        "left to smoothing_end is multiplied by smoothing_factor; plateau: the same when smoothing_metric stops "
        "improving for smoothing_patience epochs (torch's ReduceLROnPlateau rule)",
        json_schema_extra=ui("Smoothing schedule", advanced=True, show_if={"loss.smoothing_end": {"set": True}}),
    )
    smoothing_milestones: list[StrictInt] = Field(
        default_factory=list,
        max_length=100,
        description="Epochs after which smoothing takes its next step (as LR milestones count)",
        json_schema_extra=ui(
            "Smoothing milestones [epochs]",
            advanced=True,
            help="comma-separated, e.g. 30, 60",
            show_if={"loss.smoothing_end": {"set": True}, "loss.smoothing_schedule": "step"},
        ),
    )
    smoothing_factor: StrictFloat = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Share of the distance to smoothing_end kept at each step (0 = jump to smoothing_end)",
        json_schema_extra=ui(
            "Smoothing step factor",
            advanced=True,
            step=0.05,
            show_if={"loss.smoothing_end": {"set": True}, "loss.smoothing_schedule": ["step", "plateau"]},
        ),
    )
    smoothing_metric: Literal["val_loss", "val_acc"] = Field(
        "val_loss",
        json_schema_extra=ui(
            "Smoothing plateau: watch",
            advanced=True,
            show_if={"loss.smoothing_end": {"set": True}, "loss.smoothing_schedule": "plateau"},
        ),
    )
    smoothing_patience: StrictInt = Field(
        3,
        ge=0,
        le=10000,
        json_schema_extra=ui(
            "Smoothing plateau: patience [epochs]",
            advanced=True,
            show_if={"loss.smoothing_end": {"set": True}, "loss.smoothing_schedule": "plateau"},
        ),
    )
    class_weights: Literal["none", "inverse_frequency"] = Field(
        "none", json_schema_extra=ui("Class weights", advanced=True)
    )
    focal_gamma: StrictFloat = Field(
        2.0, ge=0.0, le=10.0, json_schema_extra=ui("Focal gamma", show_if={"loss.name": "focal"})
    )
    focal_alpha: list[StrictFloat] | None = Field(
        None,
        max_length=100_000,
        description="Per-class alpha for focal loss",
        json_schema_extra=ui(
            "Focal alpha (per class)",
            help="comma-separated, one per class; empty = none",
            show_if={"loss.name": "focal"},
        ),
    )
    # -1 is the lowest epsilon that keeps CE + epsilon * (1 - p_t) decreasing in p_t.
    poly_epsilon: StrictFloat = Field(
        1.0,
        ge=-1.0,
        le=100.0,
        description="Poly-1: CE + epsilon x (1 - p_t); 0 is plain CE",
        json_schema_extra=ui("Poly-1 epsilon", step=0.1, show_if={"loss.name": "poly1"}),
    )

    @field_validator("focal_alpha")
    @classmethod
    def _alpha(cls, v):
        if v is not None and any(a < 0 or a > 1000 for a in v):
            raise ValueError("alpha values must be between 0 and 1000")
        return v

    @field_validator("smoothing_milestones")
    @classmethod
    def _smoothing_milestones(cls, v):
        if any(m < 1 for m in v) or v != sorted(set(v)):
            raise ValueError("milestones must be positive, increasing and unique")
        return v

    @model_validator(mode="after")
    def _smoothing_schedule(self):
        if self.smoothing_schedule != "linear" and self.smoothing_end is None:
            raise field_error("smoothing_end", f"a {self.smoothing_schedule} smoothing schedule needs an end value")
        if self.smoothing_schedule == "step" and not self.smoothing_milestones:
            raise field_error("smoothing_milestones", "a step smoothing schedule needs at least one milestone")
        if self.smoothing_milestones and self.smoothing_schedule != "step":
            raise field_error("smoothing_milestones", "are used only by smoothing_schedule: step")
        return self


# ---------------------------------------------------------------------------------- regularize
class EMAConfig(Section):
    enabled: StrictBool = Field(False, json_schema_extra=ui("EMA of weights"))
    decay: StrictFloat = Field(
        0.999, gt=0.0, lt=1.0, json_schema_extra=ui("EMA decay", step=1e-4, show_if={"regularize.ema.enabled": True})
    )
    evaluate_ema: StrictBool = Field(
        True,
        description="Validate and test the EMA weights instead of the raw ones",
        json_schema_extra=ui("Evaluate the EMA weights", show_if={"regularize.ema.enabled": True}),
    )
    warmup: StrictBool = Field(
        True,
        description="Decay grows with the updates, 1 - (1 + step)^-power, up to decay (timm's EMA warmup): "
        "an early EMA is an average of the steps so far, not of the random initial weights",
        json_schema_extra=ui("EMA warmup", advanced=True, show_if={"regularize.ema.enabled": True}),
    )
    warmup_power: StrictFloat = Field(
        2 / 3,
        gt=0.0,
        le=1.0,
        description="EMA warmup power: 2/3 reaches decay 0.999 after ~31.6k updates, 3/4 after ~10k",
        json_schema_extra=ui(
            "EMA warmup power",
            advanced=True,
            step=0.05,
            show_if={"regularize.ema.enabled": True, "regularize.ema.warmup": True},
        ),
    )


class EarlyStopConfig(Section):
    enabled: StrictBool = Field(False, json_schema_extra=ui("Early stopping"))
    metric: Literal["val_loss", "val_acc"] = Field(
        "val_acc", json_schema_extra=ui("Early stopping: watch", show_if=EARLY_STOPPING)
    )
    patience: StrictInt = Field(
        10, ge=1, le=10000, json_schema_extra=ui("Early stopping: patience [epochs]", show_if=EARLY_STOPPING)
    )
    min_delta: StrictFloat = Field(
        0.0,
        ge=0.0,
        le=1e6,
        json_schema_extra=ui("Early stopping: min. improvement", step=1e-3, show_if=EARLY_STOPPING),
    )


class RegularizeConfig(Section):
    ema: EMAConfig = Field(default_factory=EMAConfig)
    early_stopping: EarlyStopConfig = Field(default_factory=EarlyStopConfig)


# ---------------------------------------------------------------------------------------- train
class TrainConfig(Section):
    epochs: StrictInt = Field(10, ge=1, le=10000, json_schema_extra=ui("Epochs"))
    batch_size: StrictInt = Field(64, ge=1, le=65536, json_schema_extra=ui("Batch size [images]"))
    seed: StrictInt = Field(
        0,
        ge=0,
        le=2**31 - 1,
        json_schema_extra=ui("Seed", help="Seeds weights, shuffling and augmentation"),
    )
    deterministic: StrictBool = Field(False, json_schema_extra=ui("Deterministic (slower)", advanced=True))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=ui("Device"))
    devices: StrictInt = Field(
        1,
        ge=1,
        le=64,
        description="Number of GPUs (>1 launches under torchrun)",
        json_schema_extra=ui("GPUs", advanced=True),
    )
    sync_bn: StrictBool = Field(
        False,
        description="SyncBatchNorm across devices (multi-device runs)",
        json_schema_extra=ui("Sync batch norm (multi-GPU)", advanced=True),
    )
    amp: Literal["off", "bf16", "fp16"] = Field(
        "off",
        description="Autocast dtype: bf16 or fp16 on CUDA; bf16 also on a CPU with native bfloat16 "
        "(AVX512-BF16 or AMX), where a training step of the custom models took 0.5-0.75x the float32 time",
        json_schema_extra=ui("Mixed precision", advanced=True),
    )
    channels_last: StrictBool = Field(
        True,
        description="NHWC activations and weights: on a CPU a training step of the custom models and of "
        "batch-norm timm nets takes 0.64-0.72x the NCHW time, about the same for ResNet-18, ConvNeXt and "
        "ViT; on a GPU it is what tensor-core convolutions want. The metrics are the same either way",
        json_schema_extra=ui("Channels-last memory format", advanced=True),
    )
    compile: StrictBool = Field(False, json_schema_extra=ui("torch.compile", advanced=True))
    num_workers: StrictInt = Field(
        0,
        ge=0,
        le=64,
        description="DataLoader workers for the CPU augmentation path",
        json_schema_extra=ui("Data loader workers", advanced=True),
    )
    checkpoint_every: StrictInt = Field(
        1, ge=1, le=10000, json_schema_extra=ui("Checkpoint every [epochs]", advanced=True)
    )
    keep_last: StrictInt = Field(
        3,
        ge=1,
        le=10000,
        description="Epoch checkpoints kept on disk (best is kept separately)",
        json_schema_extra=ui("Keep last N epoch checkpoints", advanced=True),
    )
    init_from_run: StrictInt | None = Field(
        None,
        ge=1,
        le=2**62,
        description="Start from this run's checkpoint (fine-tune / continue)",
        json_schema_extra=ui("Initialise from run #", advanced=True),
    )
    init_checkpoint: Literal["best", "last"] = Field(
        "last",
        json_schema_extra=ui("…from its checkpoint", advanced=True, show_if={"train.init_from_run": {"set": True}}),
    )
    init_mode: Literal["weights", "continue"] = Field(
        "weights",
        description="weights: the parent's weights, a fresh optimizer; continue: also its optimizer state "
        "(momentum, Adam moments) and, when this run's schedule is the parent's, that schedule from where it "
        "stopped (plateau state too); with this config's lr, batch size and epochs on top",
        json_schema_extra=ui("…and take over", advanced=True, show_if={"train.init_from_run": {"set": True}}),
    )
    max_steps_per_epoch: StrictInt | None = Field(
        None,
        ge=1,
        le=10**9,
        description="Cap steps per epoch (smoke tests)",
        json_schema_extra=ui("Cap steps per epoch", advanced=True),
    )
    threads: StrictInt | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads for torch (default: the cores this process may use)",
        json_schema_extra=ui("CPU threads", advanced=True),
    )
    epoch_checkpoint: Literal["weights", "full"] = Field(
        "weights",
        description="What epoch_N.pt keeps: the weights, or the full state to resume from (last.pt always has it)",
        json_schema_extra=ui("Epoch checkpoints hold", advanced=True),
    )


# ----------------------------------------------------------------------------------------- eval
TTA_VARIANTS = ("none", "hflip", "vflip", "rot90", "dihedral8", "random_mean", "random_vote", "multicrop")
# What each variant does, in words (the dashboard's tables and help).
TTA_DESCRIPTIONS = {
    "none": "plain prediction",
    "hflip": "mean of original + horizontal flip",
    "vflip": "mean of original + vertical flip",
    "rot90": "mean over 0/90/180/270 degree rotations",
    "dihedral8": "mean over the 8 flips x rotations",
    "random_mean": "mean of probabilities over N passes of the training augmentation",
    "random_vote": "majority vote over N passes of the training augmentation",
    "multicrop": "mean over 5 crops (centre + 4 corners) of the image padded by 1/8",
}
# Single views a user's own TTA set is made of (engine.training.evaluate.SET_VIEWS implements each).
TTA_SET_VIEWS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose")


class EvalConfig(Section):
    best_metric: Literal["val_acc", "val_loss"] = Field("val_acc", json_schema_extra=ui("Best checkpoint by"))
    tta: list[Literal[TTA_VARIANTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["none"],
        max_length=2 * len(TTA_VARIANTS),
        json_schema_extra=ui(
            "Test-time augmentation variants",
            help="each variant is evaluated on the test split at the end; 'none' is the plain prediction",
        ),
    )
    tta_passes: StrictInt = Field(
        5,
        ge=1,
        le=100,
        description="Augmented passes for random_mean / random_vote",
        json_schema_extra=ui("Random TTA passes", show_if={"eval.tta": ["random_mean", "random_vote"]}),
    )
    test_checkpoint: Literal["best", "last"] = Field("best", json_schema_extra=ui("Test the checkpoint", advanced=True))
    tta_set: list[Literal[TTA_SET_VIEWS]] = Field(  # type: ignore[valid-type]
        default_factory=list,
        max_length=len(TTA_SET_VIEWS),
        description="Your own TTA variant: the views you pick, combined into one prediction, evaluated beside "
        "the variants above under its own name (rot90 here is the one view turned by 90 degrees)",
        json_schema_extra=ui("Your TTA set: views", help="e.g. identity, hflip, vflip, rot90; empty = none"),
    )
    tta_set_name: str = Field(
        "my_tta",
        min_length=1,
        max_length=40,
        pattern=r"^[A-Za-z0-9_+\-]{1,40}$",
        description="The name your TTA set is stored and shown under",
        json_schema_extra=ui("Your TTA set: name", show_if={"eval.tta_set": list(TTA_SET_VIEWS)}),
    )
    tta_set_combine: Literal["mean", "vote"] = Field(
        "mean",
        description="mean of the views' probabilities, or majority vote of their predicted classes",
        json_schema_extra=ui("Your TTA set: combine by", show_if={"eval.tta_set": list(TTA_SET_VIEWS)}),
    )

    @model_validator(mode="after")
    def _tta_set(self):
        if self.tta_set and self.tta_set_name in TTA_VARIANTS:
            raise field_error("tta_set_name", f"'{self.tta_set_name}' is a built-in variant: choose another name")
        if len(set(self.tta_set)) != len(self.tta_set):
            raise field_error("tta_set", "each view once")
        return self


# ------------------------------------------------------------------------------------ the whole
class ExperimentConfig(Section):
    name: str = Field("", max_length=200, json_schema_extra=ui("Run name", help="Shown in the Runs table; optional."))
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
            raise field_error(
                "schedule.milestones", f"{self.schedule.milestones[-1]} is beyond the last epoch ({epochs})"
            )
        if self.schedule.warmup_epochs >= epochs and self.schedule.warmup_epochs > 0:
            raise field_error(
                "schedule.warmup_epochs", f"{self.schedule.warmup_epochs} must be < train.epochs ({epochs})"
            )
        if self.loss.smoothing_milestones and self.loss.smoothing_milestones[-1] >= epochs:
            raise field_error(
                "loss.smoothing_milestones",
                f"{self.loss.smoothing_milestones[-1]} must be before the last epoch ({epochs})",
            )
        if self.optim.switch_to_sgd_epoch is not None and self.optim.switch_to_sgd_epoch >= epochs:
            raise field_error("optim.switch_to_sgd_epoch", f"must be before the last epoch ({epochs})")
        if self.model.freeze.epochs >= epochs and self.model.freeze.epochs > 0:
            raise field_error("model.freeze.epochs", f"must be < train.epochs ({epochs})")
        if self.schedule.start_after_freeze and not self.model.freeze.epochs:
            raise field_error("schedule.start_after_freeze", "needs head-only epochs first (model.freeze.epochs > 0)")
        if self.schedule.start_after_freeze and self.schedule.warmup_epochs >= epochs - self.model.freeze.epochs > 0:
            raise field_error(
                "schedule.warmup_epochs",
                f"must be < the {epochs - self.model.freeze.epochs} epochs after the head-only ones",
            )
        if self.train.init_mode == "continue" and self.train.init_from_run is None:
            raise field_error(
                "train.init_from_run",
                "init_mode continue needs the run to continue: set this to its id (a finished run of the same "
                "model and optimizer), or set init_mode to weights",
            )
        if self.train.init_mode == "continue" and self.train.init_checkpoint != "last":
            raise field_error(
                "train.init_checkpoint", "continue needs the parent's last checkpoint (best holds the weights only)"
            )
        if self.model.pretrained and self.model.source == "custom":
            raise field_error("model.pretrained", "custom models have no pretrained weights")
        if self.train.devices > 1 and self.train.batch_size % self.train.devices:
            raise field_error(
                "train.batch_size", f"{self.train.batch_size} must be divisible by train.devices ({self.train.devices})"
            )
        if self.train.amp == "fp16" and self.train.device == "cpu":
            raise field_error("train.amp", "float16 autocast needs CUDA (device auto or cuda); on a CPU use bf16")
        if {"random_mean", "random_vote"} & set(self.eval.tta) and not self.augment.train:
            raise field_error(
                "eval.tta", "random_mean/random_vote repeat the training augmentation, and augment.train is empty"
            )
        return self

    # ---- serialisation: JSON is what the DB stores, YAML what users download and edit
    def to_json(self) -> str:
        return self.model_dump_json()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ExperimentConfig:
        data = load_yaml_strict(text)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([("(root)", "the config must be a mapping of sections")])
        return parse_config(data)

    @classmethod
    def from_file(cls, path: str | Path) -> ExperimentConfig:
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            return parse_config(json.loads(text, object_pairs_hook=_unique_keys))
        return cls.from_yaml(text)


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ConfigError([("(root)", f"the key '{dup}' appears twice in one mapping: keep one")])
    return dict(pairs)


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last silently), and
    reads `1e-3`, `5E4` or `1.5e3` as floats: PyYAML follows YAML 1.1, where a float needs a dot and a
    signed exponent, so it reads those as strings, which the strict number fields would refuse."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        _unique_keys([(self.construct_object(k, deep=deep), None) for k, _ in node.value])
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's float: digits with an exponent and no dot, or an unsigned exponent. Tried after the
# built-in resolvers, so an int stays an int and `.inf` / `1.5` resolve as before.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml_strict(text: str):
    """safe_load, but a duplicate key or nesting too deep is one ConfigError line (syntax errors stay yaml.YAMLError)."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError([("(root)", "the YAML is nested too deeply to be a config")]) from None
    finally:
        loader.dispose()


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


_STRICT_TYPE_ERRORS = frozenset({"int_type", "float_type", "bool_type"})


def _given(value) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def errors_from_validation(exc: ValidationError) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors():
        parts = list(err["loc"])
        if err["type"] == "cross_field":  # located by the rule itself, below the model that checked it
            parts += err["ctx"]["field"].split(".")
        loc = ".".join(_loc_part(p) for p in parts) or "(root)"
        msg = " ".join(err["msg"].removeprefix("Value error, ").split())  # one line per field, always
        if err["type"] in _STRICT_TYPE_ERRORS:  # "valid integer, got true": what was given, as written
            msg += f", got {_given(err.get('input'))}"
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


# ------------------------------------------------------------------------------- what a run changed
def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value for every leaf of nested mappings (lists are leaves: a pipeline is one setting)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_leaves(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


def default_settings() -> dict[str, Any]:
    """Every setting of a default-constructed ExperimentConfig, by dotted path (JSON values)."""
    return _leaves(ExperimentConfig().model_dump(mode="json"))


def non_default_settings(config: dict | ExperimentConfig) -> dict[str, Any]:
    """The settings of `config` that differ from the defaults, by dotted path, in schema order: derived from
    the model itself, so a new field shows up with no list to keep. Keys the schema lacks count as set."""
    raw = config.model_dump(mode="json") if isinstance(config, ExperimentConfig) else config
    defaults = default_settings()
    given = _leaves(json.loads(json.dumps(raw, default=str)))  # tuples as lists, like the dumped defaults
    changed = {p: v for p, v in given.items() if p not in defaults or defaults[p] != v}
    order = {p: i for i, p in enumerate(defaults)}
    return dict(sorted(changed.items(), key=lambda kv: order.get(kv[0], len(order))))


def short_setting_name(path: str) -> str:
    """A dotted path without its section when the rest names one setting only ("focal_gamma", "ema.decay");
    otherwise the full path ("loss.name", as model.name and optim.name exist too)."""
    head, _, rest = path.partition(".")
    if not rest:
        return path
    tails = [p.partition(".")[2] for p in default_settings()]
    return rest if tails.count(rest) == 1 else path
