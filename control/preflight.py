"""Checks that need the outside world, run before anything launches: one message per field.

Pure type/range/cross-field rules live in engine.config, checks against the real data and model in
engine.preflight; these add what needs the database (registered datasets, a parent run's checkpoint)."""

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
    """The checks against the real data and model, in a child process under a memory limit: whatever
    the dataset holds, the caller (the dashboard) never loads it itself."""
    from control.image_transforms import step_errors
    from control.sandbox import SandboxError, call_limited

    if errors := step_errors(cfg.augment.train):  # refused by name: nothing needs loading
        return errors
    try:
        errors = call_limited("control.preflight:preflight_here", cfg.model_dump(mode="json"), url)
    except SandboxError as exc:
        return [("data.dataset", str(exc))]
    return [(field, message) for field, message in errors]


def preflight_here(raw: dict, url: str | None) -> list[tuple[str, str]]:
    from engine.config import parse_config
    from engine.data import DatasetError, load_arrays, make_splits

    cfg = parse_config(raw)
    from engine.preflight import check_against_data

    try:
        spec = resolve_dataset(url, cfg.data.dataset)
        splits = make_splits(load_arrays(spec), cfg.data)
    except (DatasetError, OSError, ValueError) as exc:
        return [("data.dataset", str(exc))]
    except Exception as exc:  # a file of the wrong kind, in its library's words (EOFError, KeyError, ...)
        return [("data.dataset", f"cannot load '{cfg.data.dataset}': {type(exc).__name__}: {str(exc)[:300]}")]
    errors = check_against_data(cfg, splits)
    if cfg.train.init_from_run is not None:
        from db import queries

        ck = queries.checkpoint_path(url, cfg.train.init_from_run, cfg.train.init_checkpoint)
        if ck is None or not Path(ck).is_file():
            errors.append(
                (
                    "train.init_from_run",
                    f"run {cfg.train.init_from_run} has no {cfg.train.init_checkpoint} checkpoint on disk",
                )
            )
    return errors


def validate_schema(raw: dict) -> tuple[ExperimentConfig | None, list[tuple[str, str]]]:
    """Schema validation alone, for a config whose data/model checks already passed (a study's trial)."""
    from engine.config import ConfigError, parse_config

    try:
        return parse_config(raw), []
    except ConfigError as exc:
        return None, exc.errors


def validate_all(raw: dict, url: str | None) -> tuple[ExperimentConfig | None, list[tuple[str, str]]]:
    """Schema validation, then preflight: (config, []) or (None|config, errors)."""
    from engine.config import ConfigError, parse_config

    try:
        cfg = parse_config(raw)
    except ConfigError as exc:
        return None, exc.errors
    return cfg, preflight(cfg, url)
