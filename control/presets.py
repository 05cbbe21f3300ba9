"""Named presets: our users' final recipes and a fast known-good start per image size.

A preset is a function of the dataset the user picks: it keeps the recipe's techniques and adapts
what must change (image size and stem, pretrained weights that are not on this machine, freezing a
backbone that has nothing pretrained in it). Every adaptation is explained in a note.

    PRESETS                                   name -> one-line description (for the builder's list)
    preset_config(name, dataset, size, C)     a config dict that engine.config.parse_config accepts
    preset_notes(name, dataset, size, C)      what was adapted and why (show them next to the form)
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Image side of the built-in datasets, used when the caller does not say.
KNOWN_SIZES = {"digits": (8, 10), "fashion_mnist": (28, 10)}
ORIENTATION_SENSITIVE = {"digits", "fashion_mnist"}  # flips/rotations change what the image means

PRESETS: dict[str, str] = {
    "galaxy10-convnext-finetune": "Imbalanced 10-class galaxy images: ConvNeXt-tiny fine-tune (the galaxy-pretrained "
    "Zoobot encoder from the Hugging Face hub where obtainable, else ImageNet weights), MLP head + dropout, freeze then "
    "unfreeze last 20, focal loss + inverse-frequency weights, flips/rot90, cosine over the unfrozen epochs, "
    "TTA set identity + flips + rot90",
    "tiny200-effnetv2s-multistep": "200 classes 40x40: EfficientNetV2-S from scratch with a small stem and a "
    "stride-1 first stage, ShakeDrop 0.5, SGD nesterov, MultiStep [30, 45], dropout 0.8, batch 32, affine aug, "
    "every epoch kept, TTA majority vote of 10 random passes",
    "tiny200-resnet50-plateau": "200 classes 40x40: ResNet50 with small stem, SGD, ReduceLROnPlateau "
    "(patience, cooldown), dropout 0.7, flips + random erasing (the recipe's first stage)",
    "tiny200-resnet50-continue": "200 classes 40x40: the recipe's final stage, continuing a tiny200-resnet50-plateau "
    "run with its optimizer state (set train.init_from_run): RandAugment only, new batch size, lr 0.2 for 5 epochs",
    "stl10-resnet-se-droppath": "STL-10-like: CIFAR ResNet 64-128-256-512 + SE + drop path, AdamW "
    "warmup+cosine, RandAugment+flip, Mixup/CutMix, label smoothing lowered on plateaus, EMA, TTA",
    "fast-tiny": "Fast start for tiny images (<= 16 px, e.g. digits): small CNN, AdamW, cosine, 10 epochs",
    "fast-small": "Fast start for small images (<= 32 px, e.g. Fashion-MNIST, CIFAR): 3-stage ResNet, "
    "pad-crop + flip on the fast path, SGD one-cycle, label smoothing",
    "fast-medium": "Fast start for medium images (<= 128 px, e.g. STL-10, 40x40 sets): 4-stage ResNet, "
    "pad-crop + flip on the fast path, SGD one-cycle, bf16 on CUDA",
}


class PresetError(ValueError):
    pass


@dataclass
class Preset:
    config: dict
    notes: list[str] = field(default_factory=list)


def preset_config(name: str, dataset: str, image_size: int | None = None, num_classes: int | None = None) -> dict:
    """The preset's config for `dataset` (validates with engine.config.parse_config)."""
    return build_preset(name, dataset, image_size, num_classes).config


def preset_notes(name: str, dataset: str, image_size: int | None = None, num_classes: int | None = None) -> list[str]:
    """What the preset changed from its recipe for this dataset, and why."""
    return build_preset(name, dataset, image_size, num_classes).notes


def fast_preset_for(image_size: int | None) -> str:
    """The fast known-good preset for a dataset of this image side."""
    if image_size is not None and image_size <= 16:
        return "fast-tiny"
    if image_size is not None and image_size <= 32:
        return "fast-small"
    return "fast-medium"


def build_preset(name: str, dataset: str, image_size: int | None = None, num_classes: int | None = None) -> Preset:
    if name not in PRESETS:
        raise PresetError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    known = KNOWN_SIZES.get(dataset, (None, None))
    size = image_size if image_size is not None else known[0]
    classes = num_classes if num_classes is not None else known[1]
    preset = _BUILDERS[name](dataset, size, classes)
    preset.config = {"name": f"{name} on {dataset}", **preset.config}
    preset.config.setdefault("data", {})["dataset"] = dataset
    return preset


# ------------------------------------------------------------------------------ helpers
def _step(name: str, p: float, **params) -> dict:
    return {"name": name, "p": p, "params": params}


def _pretrained(source: str, model: str, notes: list[str]) -> bool:
    """Use pretrained weights only when they are on this machine already (no surprise downloads, no offline failure)."""
    from engine.models import pretrained_cached

    cached, where = pretrained_cached(source, model)
    if not cached:
        notes.append(
            f"pretrained weights for {model} are not on this machine ({where}): training from scratch "
            "(model.pretrained off). Put the weights in the cache or give model.weights_path to fine-tune."
        )
    return cached


def _stem(size: int | None, notes: list[str], small_below: int = 64) -> dict:
    """ImageNet stems divide the image by 4 before the first stage: small images get the 3x3 stride-1 stem."""
    if size is not None and size < small_below:
        notes.append(f"{size}x{size} images: small-image stem (3x3 stride-1 first conv, no max-pool)")
        return {"small_stem": True}
    return {}


def _orientation_note(dataset: str, notes: list[str]) -> None:
    if dataset in ORIENTATION_SENSITIVE:
        notes.append(
            f"the recipe flips/rotates images; for {dataset} orientation matters (a flipped digit or shoe "
            "is another image): consider removing those augmentations and TTA views"
        )


def _resize_large(size: int | None, notes: list[str], limit: int = 256, to: int = 224) -> dict:
    if size is not None and size > limit:
        notes.append(f"{size}x{size} images resized to {to}x{to} (the recipe's fine-tuning resolution)")
        return {"image_size": to}
    return {}


# ------------------------------------------------------------------------------ the users' recipes
# The recipe's best model: ConvNeXt-tiny pretrained on galaxy images (Zoobot), a timm model on the Hugging Face hub
GALAXY_ENCODER = "hf-hub:mwalmsley/zoobot-encoder-convnext_tiny"


def _galaxy_backbone(notes: list[str]) -> tuple[dict, bool]:
    """The galaxy-pretrained encoder when its weights can be had here (Hugging Face cache, or the hub
    reachable), else timm's ImageNet convnext_tiny, with a note saying how to use the encoder."""
    from engine.models import hub_weights_obtainable

    obtainable, where = hub_weights_obtainable(GALAXY_ENCODER)
    if obtainable:  # hub_architecture: builds offline too, once the weights are in the cache
        return {"name": GALAXY_ENCODER, "hub_architecture": "convnext_tiny", "pretrained": True}, True
    notes.append(
        f"the recipe's best result used the galaxy-pretrained ConvNeXt-tiny encoder {GALAXY_ENCODER} "
        f"(Zoobot), whose weights are {where}: this preset uses timm's ImageNet convnext_tiny instead. To "
        "fine-tune the galaxy encoder, download its weights file (pytorch_model.bin) where there is network and "
        f"set model.name: {GALAXY_ENCODER}, model.hub_architecture: convnext_tiny, model.pretrained: on and "
        "model.weights_path: that file"
    )
    pretrained = _pretrained("timm", "convnext_tiny", notes)
    return {"name": "convnext_tiny", "pretrained": pretrained}, pretrained


def _galaxy10(dataset, size, classes) -> Preset:
    notes: list[str] = []
    backbone, pretrained = _galaxy_backbone(notes)
    epochs = 30
    freeze = {"epochs": 2, "unfreeze_last": 20} if pretrained else {"epochs": 0}
    if not pretrained:
        notes.append(
            "no pretrained backbone: freezing it first would train the head on random features, so freezing is off"
        )
    _orientation_note(dataset, notes)
    hidden = 256 if (classes or 10) <= 256 else 512
    return Preset(
        {
            "data": {"val_fraction": 0.1, "normalize": "dataset", **_resize_large(size, notes)},
            "model": {
                "source": "timm",
                **backbone,
                **_stem(size, notes),
                "head": {"kind": "mlp", "hidden": [hidden], "dropout": 0.3},
                "freeze": freeze,
            },
            "augment": {
                "train": [
                    _step("RandomResizedCrop", 1.0, scale=[0.8, 1.0]),
                    _step("HorizontalFlip", 0.5),
                    _step("VerticalFlip", 0.5),
                    _step("RandomRotate90", 0.5),
                    _step("RandomBrightnessContrast", 0.2, brightness_limit=0.2, contrast_limit=0.2),
                    _step(
                        "Affine", 0.5, translate_percent=[-0.0625, 0.0625], scale=[0.9, 1.1], rotate=[-45, 45]
                    ),  # ShiftScaleRotate
                ]
            },
            "optim": {"name": "adamw", "lr": 1e-4 if pretrained else 1e-3, "weight_decay": 0.05},
            # the recipe's cosine (T_max = the fine-tuning epochs) starts when the backbone unfreezes
            "schedule": {"name": "cosine", "t_max": epochs - freeze["epochs"], "start_after_freeze": pretrained},
            "loss": {"name": "focal", "focal_gamma": 2.0, "label_smoothing": 0.1, "class_weights": "inverse_frequency"},
            "train": {"epochs": epochs, "batch_size": 32, "keep_last": 3},
            "eval": {
                "tta": ["none", "hflip", "vflip", "rot90", "dihedral8"],
                # the recipe's own TTA: identity, both flips and a 90-degree turn, averaged into one prediction
                "tta_set": ["identity", "hflip", "vflip", "rot90"],
                "tta_set_name": "flips_rot90",
                "best_metric": "val_acc",
            },
        },
        notes,
    )


def _tiny200_effnetv2s(dataset, size, classes) -> Preset:
    notes: list[str] = [
        "every epoch is kept (the recipe's best test result came from an earlier epoch's checkpoint): "
        "evaluate any of them on the Run detail page or with `engine evaluate --checkpoint epoch_NNNN`",
        "model.shakedrop differs from the recipe in where it acts: the recipe put a single ShakeDrop (0.5) somewhere "
        "in the centre of the network, at a place it did not record; this preset gates every MBConv / FusedMBConv "
        "residual branch, the rate growing linearly with depth to 0.5 (ShakeDrop's own rule, about 0.25 in the "
        "centre), because ShakeDrop is defined on residual branches and that is where the product puts it",
    ]
    stem = _stem(size, notes)
    if stem:
        stem["stride1_stages"] = 1  # the recipe also set stride 1 in the first stride-2 stage after the stem
    _orientation_note(dataset, notes)
    epochs = 60
    return Preset(
        {
            "data": {"val_fraction": 0.1, "normalize": "dataset", **_resize_large(size, notes)},
            "model": {
                "source": "torchvision",
                "name": "efficientnet_v2_s",
                "pretrained": False,
                "dropout": 0.8,
                "shakedrop": 0.5,  # on each MBConv / FusedMBConv residual branch, linear over depth
                **stem,
            },
            "augment": {
                "train": [
                    _step("HorizontalFlip", 0.5),
                    _step("Affine", 0.8, translate_percent=[-0.125, 0.125]),
                    _step("Affine", 0.8, rotate=[-10, 10]),
                ]
            },
            "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
            "schedule": {"name": "multistep", "milestones": [30, 45], "gamma": 0.1},
            "train": {"epochs": epochs, "batch_size": 32, "checkpoint_every": 1, "keep_last": epochs},
            "eval": {"tta": ["none", "random_vote"], "tta_passes": 10},
        },
        notes,
    )


def _resnet50_model(size, notes: list[str]) -> dict:
    """Both stages' model: a continuation needs the very same one."""
    return {"source": "torchvision", "name": "resnet50", "pretrained": False, "dropout": 0.7, **_stem(size, notes)}


def _tiny200_resnet50(dataset, size, classes) -> Preset:
    notes: list[str] = [
        "this is the recipe's first stage; its final result came from continuing this run: when it has "
        "finished, apply the tiny200-resnet50-continue preset and set train.init_from_run to this run's id",
        "the recipe added ReduceLROnPlateau's patience and cooldown without recording their values: "
        "schedule.plateau_patience 5 and schedule.plateau_cooldown 2 are this preset's choice",
    ]
    _orientation_note(dataset, notes)
    return Preset(
        {
            "data": {"val_fraction": 0.1, "normalize": "dataset", **_resize_large(size, notes)},
            "model": _resnet50_model(size, notes),
            "augment": {
                "train": [
                    _step("HorizontalFlip", 0.5),
                    _step("VerticalFlip", 0.5),
                    _step("Erasing", 0.5, scale=[0.02, 0.2]),
                ]
            },
            "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
            "schedule": {
                "name": "plateau",
                "plateau_metric": "val_loss",
                "plateau_patience": 5,
                "plateau_cooldown": 2,
                "plateau_factor": 0.1,
            },
            "train": {"epochs": 100, "batch_size": 64, "keep_last": 5},
            "eval": {"tta": ["none", "hflip"]},
        },
        notes,
    )


def _tiny200_resnet50_continue(dataset, size, classes) -> Preset:
    """The recipe's last stage: the first stage's run continued (its weights and SGD momentum), the earlier
    transforms replaced by RandAugment, another batch size, a short run at lr 0.2."""
    notes: list[str] = [
        "continues a finished tiny200-resnet50-plateau run: set train.init_from_run to that run's id (its weights "
        "and SGD momentum are taken over; the model and optimizer must stay as they are)",
        "the recipe changed the batch size without recording the new value: train.batch_size 128 is this "
        "preset's choice (the first stage used 64); it ran a few epochs only: train.epochs 5",
        "schedule none (a constant lr 0.2): a continued run keeps the parent's schedule state only when its "
        "schedule is the parent's, and the parent's plateau reductions would then scale 0.2 down",
    ]
    _orientation_note(dataset, notes)
    return Preset(
        {
            "data": {"val_fraction": 0.1, "normalize": "dataset", **_resize_large(size, [])},
            "model": _resnet50_model(size, []),  # the first stage's notes say why
            "augment": {"train": [_step("RandAugment", 1.0, num_ops=2, magnitude=9)]},  # the earlier ones dropped
            "optim": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4},
            "schedule": {"name": "none"},
            "train": {
                "epochs": 5,
                "batch_size": 128,
                "keep_last": 5,
                "init_from_run": None,  # the user's first-stage run
                "init_checkpoint": "last",
                "init_mode": "continue",
            },
            "eval": {"tta": ["none", "hflip"]},
        },
        notes,
    )


def _stl10(dataset, size, classes) -> Preset:
    notes: list[str] = []
    epochs = 120
    if dataset in ORIENTATION_SENSITIVE:
        notes.append(f"the recipe flips images horizontally; for {dataset} that changes what a digit means")
    return Preset(
        {
            "data": {
                "val_fraction": 0.1,
                "split_seed": 0,
                "normalize": "dataset",
                **_resize_large(size, notes, 128, 96),
            },
            "model": {
                "source": "custom",
                "name": "resnet",
                "widths": [64, 128, 256, 512],
                "depths": [2, 2, 2, 2],
                "se": True,
                "drop_path": 0.1,
                "dropout": 0.2,
            },
            "augment": {
                "train": [_step("HorizontalFlip", 0.5), _step("RandAugment", 1.0, num_ops=2, magnitude=9)],
                "mixup": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5, "stop_epoch": 100},
            },
            "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05},
            "schedule": {"name": "cosine", "warmup_epochs": 5, "warmup_start_factor": 0.1, "eta_min": 1e-6},
            # "dynamic" smoothing: lowered when the validation accuracy stops improving (halved each plateau)
            "loss": {
                "name": "ce",
                "label_smoothing": 0.1,
                "smoothing_end": 0.0,
                "smoothing_schedule": "plateau",
                "smoothing_metric": "val_acc",
                "smoothing_patience": 5,
                "smoothing_factor": 0.5,
            },
            "regularize": {
                "ema": {"enabled": True, "decay": 0.999},
                "early_stopping": {"enabled": True, "metric": "val_acc", "patience": 20},
            },
            "train": {"epochs": epochs, "batch_size": 64, "seed": 0, "keep_last": 3},
            "eval": {"tta": ["none", "hflip"]},
        },
        notes,
    )


# ------------------------------------------------------------------------------ fast, known-good starts
def _fast_tiny(dataset, size, classes) -> Preset:
    notes = []
    if size is not None and size > 16:
        notes.append(f"{size}x{size} images: fast-tiny is meant for <= 16 px; {fast_preset_for(size)} fits better")
    return Preset(
        {
            "model": {"source": "custom", "name": "small_cnn", "widths": [32]},
            "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01},
            "schedule": {"name": "cosine"},
            "train": {"epochs": 10, "batch_size": 64},
            "eval": {"tta": ["none"]},
        },
        notes,
    )


def _fast_resnet(widths: list[int], epochs: int, amp: str):
    def build(dataset, size, classes) -> Preset:
        notes: list[str] = []
        pad = max(1, (size or 32) // 8)
        steps = [_step("PadRandomCrop", 1.0, padding=pad)]
        if dataset in ORIENTATION_SENSITIVE:
            notes.append(f"no horizontal flip: orientation matters for {dataset}")
        else:
            steps.append(_step("HorizontalFlip", 0.5))
        return Preset(
            {
                "data": {"val_fraction": 0.1, **_resize_large(size, notes, 128, 96)},
                "model": {"source": "custom", "name": "resnet", "widths": widths, "depths": [1] * len(widths)},
                "augment": {"train": steps},
                "optim": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
                "schedule": {"name": "onecycle", "onecycle_pct_start": 0.25},
                "loss": {"label_smoothing": 0.1},
                "train": {"epochs": epochs, "batch_size": 128, "amp": amp},
                "eval": {"tta": ["none"] if dataset in ORIENTATION_SENSITIVE else ["none", "hflip"]},
            },
            notes,
        )

    return build


_BUILDERS = {
    "galaxy10-convnext-finetune": _galaxy10,
    "tiny200-effnetv2s-multistep": _tiny200_effnetv2s,
    "tiny200-resnet50-plateau": _tiny200_resnet50,
    "tiny200-resnet50-continue": _tiny200_resnet50_continue,
    "stl10-resnet-se-droppath": _stl10,
    "fast-tiny": _fast_tiny,
    "fast-small": _fast_resnet([32, 64, 128], 10, "off"),
    "fast-medium": _fast_resnet([32, 64, 128, 256], 15, "bf16"),
}
