"""The Studies page's designer, outside the page: widget values -> a study file (the same mapping
`python -m engine study create` reads), which control.studies then validates field by field."""

from __future__ import annotations

import yaml

from dashboard import forms

KINDS = ["levels", "uniform", "log", "int"]  # levels: a list; the others: a range for random/TPE
OBJECTIVES = {
    "val_acc": "val accuracy",
    "test_acc": "test accuracy",
    "macro_f1": "test macro-F1",
    "val_loss": "val loss",
}
BASE_SOURCES = ["Builder's current config", "Preset", "Past run"]
KINDS_OF_STUDY = ["Factors", "K-fold ensemble"]  # K-fold: the trials are the K folds of the base, one ensemble
SKIP = {"train.seed", "name"}  # the seed comes from repeats


def factor_choices() -> list[str]:
    """Every config field a factor can vary, by dotted path (the builder's fields)."""
    return [s.path for s in forms.field_specs() if s.path not in SKIP and s.kind not in ("steps",)]


def spec_for(path: str):
    return next((s for s in forms.field_specs() if s.path == path), None)


def parse_levels(text: str) -> tuple[list | None, str | None]:
    """'0.001, 0.01' -> [0.001, 0.01]; 'adamw, sgd' -> ['adamw', 'sgd'] (YAML scalars, comma-separated)."""
    if not str(text).strip():
        return None, "give the levels, comma-separated (e.g. 0.001, 0.01)"
    from engine.config import ConfigError, load_yaml_strict

    try:
        levels = load_yaml_strict("[" + str(text) + "]")  # 1e-3 a float, as in a config file
    except yaml.YAMLError:
        return None, f"cannot read {text!r}: separate levels with commas"
    except ConfigError as exc:
        return None, f"cannot read the levels: {exc.errors[0][1]}"
    return levels, None


def factor_entry(row: dict) -> tuple[object | None, str | None]:
    """One designer row -> the factor's value in the study file (levels list or range mapping)."""
    if row.get("kind", "levels") == "levels":
        if row.get("choices"):
            return list(row["choices"]), None
        return parse_levels(row.get("levels", ""))
    low, high = row.get("low"), row.get("high")
    if low is None or high is None:
        return None, "give the range's low and high"
    return {"low": low, "high": high, "kind": row["kind"]}, None


def base_entry(source: str, builder_config: dict | None, preset: str, dataset: str, run_id) -> dict | None:
    if source == "Past run":
        return {"run": int(run_id)} if run_id is not None else None
    if source == "Preset":
        return {"preset": preset, "dataset": dataset}
    return dict(builder_config or forms.default_config())


def build_study(
    *,
    name: str,
    base: dict | None,
    factors: list[dict],
    repeats: int,
    strategy: str,
    trials: int | None,
    epochs: int | None,
    metric: str,
    direction: str,
    pruner: str,
    kfold: int | None = None,
) -> tuple[dict, list[tuple[str, str]]]:
    """(study mapping, the designer's own refusals); control.studies.load_study checks the rest. With
    `kfold` a K-fold study: no factors, seeds, strategy, budget or pruner (the folds are its trials)."""
    errors: list[tuple[str, str]] = []
    if kfold is not None:
        study = {"name": name, "base": base if base is not None else {}, "kfold": int(kfold)}
        study["objective"] = {"metric": metric, "direction": direction}
        return study, [("base", "pick the run to start from")] if base is None else []
    out_factors: dict = {}
    for row in factors:
        path = row.get("path")
        if not path:
            continue
        if path in out_factors:
            errors.append((f"factors.{path}", "this field is already a factor"))
            continue
        value, err = factor_entry(row)
        if err:
            errors.append((f"factors.{path}", err))
        else:
            out_factors[path] = value
    study: dict = {
        "name": name,
        "base": base if base is not None else {},
        "factors": out_factors,
        "repeats": int(repeats),
        "strategy": strategy,
        "objective": {"metric": metric, "direction": direction},
    }
    budget = {k: int(v) for k, v in (("trials", trials), ("epochs", epochs)) if v}
    if budget:
        study["budget"] = budget
    if pruner != "none":
        study["pruner"] = {"kind": pruner}
    if base is None:
        errors.append(("base", "pick the run to start from"))
    return study, errors


def study_file_text(study: dict) -> str:
    return yaml.safe_dump(study, sort_keys=False)
