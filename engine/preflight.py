"""Checks of a config against its real data and model, before anything launches: one message per field.

Pure type/range/cross-field rules live in engine.config; these need the loaded dataset and a model
built once on CPU. They never touch the database (control.preflight adds the checks that do)."""

from __future__ import annotations

from pathlib import Path

from engine.config import ExperimentConfig


def check_against_data(cfg: ExperimentConfig, splits) -> list[tuple[str, str]]:
    """Rules that need the split sizes, a real image and a built model."""
    from engine.augment import apply_pipeline, build_pipeline

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
        pipeline = build_pipeline(cfg.augment.train, splits.image_size)
        sample = splits.train_x[0]
        out = apply_pipeline(pipeline, sample)
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
    errors += check_model(cfg, splits)
    if cfg.data.kfold and n_train < cfg.data.kfold:
        errors.append(("data.kfold", "more folds than training images"))
    return errors


def check_model(cfg, splits) -> list[tuple[str, str]]:
    """Build the model once on CPU and push one tiny batch through: catches unknown names, missing
    weights offline, and images too small for the architecture, before a process is started."""
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
    except Exception as exc:
        return [
            (
                "model.name",
                f"'{cfg.model.name}' does not accept {splits.image_size}x{splits.image_size} images: "
                f"{str(exc).splitlines()[0][:200]} (try data.image_size or model.small_stem)",
            )
        ]
    return []
