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


# A preflight note (not an error: nothing is refused) travels back from the child with this prefix.
NOTE = "note:"


def preflight(cfg: ExperimentConfig, url: str | None, notes: list | None = None) -> list[tuple[str, str]]:
    """The checks against the real data and model, in a child process under a memory limit: whatever
    the dataset holds, the caller (the dashboard) never loads it itself. `notes`, when given, receives
    what the data overrides without an error, e.g. the dataset's own validation split over val_fraction."""
    from control.image_transforms import step_errors
    from control.sandbox import SandboxError, call_limited

    if errors := step_errors(cfg.augment.train):  # refused by name: nothing needs loading
        return errors
    try:
        errors = call_limited("control.preflight:preflight_here", cfg.model_dump(mode="json"), url)
    except SandboxError as exc:
        return [("data.dataset", str(exc))]
    if notes is not None:
        notes += [(field.removeprefix(NOTE), message) for field, message in errors if field.startswith(NOTE)]
    return [(field, message) for field, message in errors if not field.startswith(NOTE)]


def preflight_here(raw: dict, url: str | None) -> list[tuple[str, str]]:
    from engine.config import parse_config
    from engine.data import split_notes

    cfg = parse_config(raw)
    errors, loaded = check_here(cfg, url)
    if loaded is not None:
        errors = errors + [(NOTE + field, message) for field, message in split_notes(loaded[0], cfg.data)]
    return errors


def check_here(cfg: ExperimentConfig, url: str | None):
    """The preflight checks in this process: (errors, (ImageArrays, Splits) or None). The engine's own
    `train config.yaml` calls this and trains on what it loaded, so its dataset is loaded once."""
    from control.image_transforms import step_errors
    from engine.data import DatasetError, load_arrays, make_splits
    from engine.preflight import check_against_data

    if errors := step_errors(cfg.augment.train):
        return errors, None
    try:
        spec = resolve_dataset(url, cfg.data.dataset)
        data = load_arrays(spec)
        splits = make_splits(data, cfg.data)
    except (DatasetError, OSError, ValueError) as exc:
        return [("data.dataset", str(exc))], None
    except Exception as exc:  # a file of the wrong kind, in its library's words (EOFError, KeyError, ...)
        return [("data.dataset", f"cannot load '{cfg.data.dataset}': {type(exc).__name__}: {str(exc)[:300]}")], None
    parent, parent_errors = _parent_checkpoint(cfg, url)
    errors = check_against_data(cfg, splits, parent) + parent_errors
    return errors, (data, splits)


def _parent_checkpoint(cfg: ExperimentConfig, url: str | None) -> tuple[dict | None, list[tuple[str, str]]]:
    """The checkpoint train.init_from_run names, loaded (weights only) for the model checks; else why not."""
    t = cfg.train
    if t.init_from_run is None:
        return None, []
    from db import queries
    from engine.training.checkpoint import load

    ck = queries.checkpoint_path(url, t.init_from_run, t.init_checkpoint)
    if ck is None or not Path(ck).is_file():
        return None, [("train.init_from_run", f"run {t.init_from_run} has no {t.init_checkpoint} checkpoint on disk")]
    try:
        return load(Path(ck)), []
    except Exception as exc:  # truncated or not a checkpoint: torch's words differ by fault
        return None, [("train.init_from_run", f"{ck} cannot be read ({type(exc).__name__})")]


def validate_schema(raw: dict) -> tuple[ExperimentConfig | None, list[tuple[str, str]]]:
    """Schema validation alone, for a config whose data/model checks already passed (a study's trial)."""
    from engine.config import ConfigError, parse_config

    try:
        return parse_config(raw), []
    except ConfigError as exc:
        return None, exc.errors


def validate_all(
    raw: dict, url: str | None, notes: list | None = None
) -> tuple[ExperimentConfig | None, list[tuple[str, str]]]:
    """Schema validation, then preflight: (config, []) or (None|config, errors); `notes` as in preflight."""
    from engine.config import ConfigError, parse_config

    try:
        cfg = parse_config(raw)
    except ConfigError as exc:
        return None, exc.errors
    return cfg, preflight(cfg, url, notes)
