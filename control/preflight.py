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
    from engine.data import DatasetError, load_arrays, make_splits
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


def validate_all(raw: dict, url: str | None) -> tuple[ExperimentConfig | None, list[tuple[str, str]]]:
    """Schema validation, then preflight: (config, []) or (None|config, errors)."""
    from engine.config import ConfigError, parse_config

    try:
        cfg = parse_config(raw)
    except ConfigError as exc:
        return None, exc.errors
    return cfg, preflight(cfg, url)
