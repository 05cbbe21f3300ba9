"""Checks of a config against its real data and model, before anything launches: one message per field.

Pure type/range/cross-field rules live in engine.config; these need the loaded dataset and a model
built once on CPU. They never touch the database (control.preflight adds the checks that do)."""

from __future__ import annotations

from pathlib import Path

from engine.config import ExperimentConfig


def check_against_data(cfg: ExperimentConfig, splits, parent: dict | None = None) -> list[tuple[str, str]]:
    """Rules that need the split sizes, a real image and a built model. `parent`: the checkpoint the
    config initialises from (train.init_from_run), checked against the built model."""
    errors: list[tuple[str, str]] = []
    n_train = len(splits.train_y)
    if cfg.train.batch_size > n_train:
        errors.append(
            ("train.batch_size", f"{cfg.train.batch_size} is larger than the training split ({n_train} images)")
        )
    if (
        cfg.loss.name == "focal"
        and cfg.loss.focal_alpha is not None
        and len(cfg.loss.focal_alpha) != splits.num_classes
    ):
        errors.append(
            ("loss.focal_alpha", f"needs {splits.num_classes} values (one per class), got {len(cfg.loss.focal_alpha)}")
        )
    try:
        sample = splits.train_x[0]
        out = _augmented_sample(cfg, sample)
        if out.shape != sample.shape:
            errors.append(
                (
                    "augment.train",
                    f"the pipeline turns {sample.shape[0]}x{sample.shape[1]} images into "
                    f"{out.shape[0]}x{out.shape[1]}; crops must keep the training size",
                )
            )
    except Exception as exc:
        errors.append(("augment.train", f"the pipeline fails on a real image: {str(exc)[:300]}"))
    if cfg.model.pretrained and cfg.model.weights_path and not Path(cfg.model.weights_path).is_file():
        errors.append(("model.weights_path", f"file not found: {cfg.model.weights_path}"))
    errors += check_model(cfg, splits, parent)
    errors += _machine_errors(cfg)
    if cfg.data.kfold and n_train < cfg.data.kfold:
        errors.append(("data.kfold", "more folds than training images"))
    h, w = splits.train_x.shape[1:3]
    if h != w and {"rot90", "rot270", "transpose"} & set(cfg.eval.tta_set):
        errors.append(("eval.tta_set", f"rot90, rot270 and transpose need square images; these are {h}x{w}"))
    if cfg.data.normalize == "custom" and len(cfg.data.mean) != splits.channels:
        errors.append(("data.mean", f"has {len(cfg.data.mean)} values but the images have {splits.channels} channels"))
    return errors


def _machine_errors(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """What this machine cannot do as asked: bf16 autocast on device cpu without native bfloat16 (device
    auto trains float32 there instead, and says so in the run's log)."""
    from engine.training.run import cpu_amp_error

    error = cpu_amp_error(cfg.train)
    return [("train.amp", error)] if error else []


def _augmented_sample(cfg: ExperimentConfig, sample):
    """One real image through the pipeline the run will use: the batched ops when every step has one
    (the fast path; albumentations is then not imported for steps the registry checks itself), else
    albumentations' CPU pipeline."""
    from engine.augment import apply_pipeline, build_pipeline
    from engine.augment.batched import build_ops, preview

    steps = cfg.augment.train
    if steps and cfg.augment.fast_path != "off" and not build_ops(steps, sample.shape)[1]:
        return preview(steps, sample[None], cfg.train.seed)[0]
    return apply_pipeline(build_pipeline(steps, sample.shape[0]), sample)


def check_model(cfg, splits, parent: dict | None = None) -> list[tuple[str, str]]:
    """Build the model once on CPU and push one tiny batch through: catches unknown names, missing
    weights offline, and images too small for the architecture, before a process is started; and,
    given the parent checkpoint of train.init_from_run, whether enough of the model comes from it."""
    import torch

    from engine.models import ModelError, build_model

    try:
        model = build_model(cfg.model, splits.channels, splits.num_classes)
    except ModelError as exc:
        field, _, msg = str(exc).partition(": ")
        return [(field if field.startswith("model.") else "model.name", msg or str(exc))]
    except Exception as exc:
        return [("model.name", f"cannot build {cfg.model.source} model '{cfg.model.name}': {str(exc)[:300]}")]
    try:
        model.eval()
        x = torch.zeros(2, splits.channels, splits.image_size, splits.image_size)
        with torch.no_grad():
            out = model(x)
        if out.shape[-1] != splits.num_classes:
            return [("model.name", f"model outputs {out.shape[-1]} classes, dataset has {splits.num_classes}")]
        if parent is not None:
            return check_init_from(cfg, model, parent)
    except Exception as exc:
        return [
            (
                "model.name",
                f"'{cfg.model.name}' does not accept {splits.image_size}x{splits.image_size} images: "
                f"{str(exc).splitlines()[0][:200]} (try data.image_size or model.small_stem)",
            )
        ]
    return []


def check_init_from(cfg, model, parent: dict) -> list[tuple[str, str]]:
    """Initialising from a run loads the tensors that match by name and shape: refuse a parent that
    supplies less than INIT_MIN_SHARE of the new model, and a continuation whose optimizer state
    cannot apply (another optimizer, a checkpoint without one, a model that differs at all)."""
    from engine.models import INIT_MIN_SHARE, matching_tensors

    t = cfg.train
    where = f"run {t.init_from_run}'s {t.init_checkpoint} checkpoint"
    state = parent.get("model") if isinstance(parent, dict) else None
    if not isinstance(state, dict):
        return [("train.init_from_run", f"{where} holds no model weights")]
    total = len(model.state_dict())
    loaded = len(matching_tensors(model, state))
    if loaded < INIT_MIN_SHARE * total:
        return [
            (
                "train.init_from_run",
                f"only {loaded} of the model's {total} tensors ({loaded / max(total, 1):.0%}) match {where} by "
                f"name and shape; at least {INIT_MIN_SHARE:.0%} must (is it the same architecture?)",
            )
        ]
    if t.init_mode != "continue":
        return []
    if "optimizer" not in parent:
        return [("train.init_mode", f"{where} holds no optimizer state to continue from")]
    parent_optim = parent.get("optim_name")
    if parent_optim and parent_optim != cfg.optim.name:
        return [
            (
                "train.init_mode",
                f"continue takes over the parent's {parent_optim} state: set optim.name to {parent_optim}, "
                "or init_mode weights",
            )
        ]
    if loaded != total:
        return [
            (
                "train.init_mode",
                f"continue needs the very same model: {total - loaded} of its {total} tensors differ from {where}; "
                "use init_mode weights",
            )
        ]
    from engine.training.optim import build_optimizer

    groups = [len(g["params"]) for g in build_optimizer(cfg.optim, model, cfg.model.backbone_lr_mult).param_groups]
    if [len(g["params"]) for g in parent["optimizer"].get("param_groups", [])] != groups:
        return [
            (
                "train.init_mode",
                f"continue needs the parent's optimizer parameter groups, and {where} has others; "
                "use init_mode weights",
            )
        ]
    return []
