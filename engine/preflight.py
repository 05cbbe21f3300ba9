"""Checks that need the outside world, run before anything launches: one message per field.

Pure type/range/cross-field rules live in engine.config; these need the dataset registry, the
dataset itself, the filesystem or the model zoo."""
from __future__ import annotations

from pathlib import Path



from engine.config import ExperimentConfig


def resolve_dataset(url: str | None, name: str):
    """Dataset name -> DatasetSpec: built-ins, 'kind:path', or a dataset registered in the DB."""
    from engine.data import DatasetError, DatasetSpec, parse_dataset_ref

    spec = parse_dataset_ref(name)
    if spec is not None:
        return spec
    from db import queries

    row = queries.get_dataset(url, name)
    if row is None:
        raise DatasetError(f"no dataset named '{name}' is registered")
    return DatasetSpec(row["kind"], row["path"], row["options"] or {})


def preflight(cfg: ExperimentConfig, url: str | None) -> list[tuple[str, str]]:
    from engine.augment import apply_pipeline, build_pipeline
    from engine.data import DatasetError, load_arrays, make_splits

    errors: list[tuple[str, str]] = []
    try:
        spec = resolve_dataset(url, cfg.data.dataset)
        splits = make_splits(load_arrays(spec), cfg.data)
    except (DatasetError, OSError, ValueError) as exc:
        return [("data.dataset", str(exc))]
    except Exception as exc:  # a file of the wrong kind, in its library's words (EOFError, KeyError, ...)
        return [("data.dataset", f"cannot load '{cfg.data.dataset}': {type(exc).__name__}: {str(exc)[:300]}")]
    n_train = len(splits.train_y)
    if cfg.train.batch_size > n_train:
        errors.append(("train.batch_size", f"{cfg.train.batch_size} is larger than the training split ({n_train} images)"))
    if cfg.loss.name == "focal" and cfg.loss.focal_alpha is not None and len(cfg.loss.focal_alpha) != splits.num_classes:
        errors.append(("loss.focal_alpha", f"needs {splits.num_classes} values (one per class), got {len(cfg.loss.focal_alpha)}"))
    try:
        pipeline = build_pipeline(cfg.augment.train, splits.image_size)
        sample = splits.train_x[0]
        out = apply_pipeline(pipeline, sample)
        if out.shape != sample.shape:
            errors.append(("augment.train", f"the pipeline turns {sample.shape[0]}x{sample.shape[1]} images into "
                                            f"{out.shape[0]}x{out.shape[1]}; crops must keep the training size"))
    except Exception as exc:
        errors.append(("augment.train", f"the pipeline fails on a real image: {str(exc)[:300]}"))
    if cfg.model.pretrained and cfg.model.weights_path and not Path(cfg.model.weights_path).is_file():
        errors.append(("model.weights_path", f"file not found: {cfg.model.weights_path}"))
    errors += _model_check(cfg, splits)
    if cfg.train.init_from_run is not None:
        from db import queries

        ck = queries.checkpoint_path(url, cfg.train.init_from_run, cfg.train.init_checkpoint)
        if ck is None or not Path(ck).is_file():
            errors.append(("train.init_from_run", f"run {cfg.train.init_from_run} has no {cfg.train.init_checkpoint} checkpoint on disk"))
    if cfg.data.kfold and n_train < cfg.data.kfold:
        errors.append(("data.kfold", "more folds than training images"))
    return errors


def _model_check(cfg, splits) -> list[tuple[str, str]]:
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
        return [("model.name", f"'{cfg.model.name}' does not accept {splits.image_size}x{splits.image_size} images: "
                               f"{str(exc).splitlines()[0][:200]} (try data.image_size or model.small_stem)")]
    return []


def validate_all(raw: dict, url: str | None) -> tuple[ExperimentConfig | None, list[tuple[str, str]]]:
    """Schema validation, then preflight: (config, []) or (None|config, errors)."""
    from engine.config import ConfigError, parse_config

    try:
        cfg = parse_config(raw)
    except ConfigError as exc:
        return None, exc.errors
    return cfg, preflight(cfg, url)



