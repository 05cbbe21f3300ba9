"""The study file: a base config, factors (any config field by its dotted path), repeats, strategy,
budget, objective and pruner. Same style as engine.config: unknown keys refused, one message per field.

A factor's levels are checked by applying each one to the base config and validating the result with
the engine's own schema, so a level the engine would refuse is refused here, before anything is queued.

`kfold: K` (2..20) makes a K-fold study: no factors of its own, its trials are the K folds of the base
config (data.kfold = K, factor data.fold = 0 .. K-1, one seed, grid), tested together as one ensemble
when the last one ends (control.study_kfold).
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.config import ConfigError, errors_from_validation, parse_config

OBJECTIVES = {"val_acc": "maximize", "test_acc": "maximize", "macro_f1": "maximize", "val_loss": "minimize"}
MAX_RUNS = 10_000


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(Section):
    """A continuous or integer interval for random/TPE: uniform, log-uniform or int."""

    low: float
    high: float
    kind: Literal["uniform", "log", "int"] = "uniform"

    @model_validator(mode="after")
    def _non_empty(self):
        if not self.high > self.low:
            raise ValueError(f"empty range: high ({self.high:g}) must be > low ({self.low:g})")
        if self.kind == "log" and self.low <= 0:
            raise ValueError("a log-uniform range needs low > 0")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs whole-number bounds")
        return self


class Objective(Section):
    metric: Literal["val_acc", "test_acc", "macro_f1", "val_loss"] = "val_acc"
    direction: Literal["maximize", "minimize"] | None = None

    @model_validator(mode="after")
    def _default_direction(self):
        if self.direction is None:
            self.direction = OBJECTIVES[self.metric]
        return self


class Budget(Section):
    trials: int | None = Field(None, ge=1, le=MAX_RUNS, description="configurations to try (random/TPE)")
    epochs: int | None = Field(None, ge=1, description="total training epochs over all runs")


class Pruner(Section):
    kind: Literal["median", "halving"] = "median"
    n_startup_trials: int = Field(1, ge=0)
    n_warmup_steps: int = Field(0, ge=0)


class StudySpec(Section):
    name: str = Field("", max_length=200)
    base: dict[str, Any]
    factors: dict[str, list[Any] | Range] = Field(min_length=1)
    repeats: int = Field(1, ge=1, le=100)
    strategy: Literal["grid", "random", "tpe"] = "grid"
    budget: Budget = Field(default_factory=Budget)
    objective: Objective = Field(default_factory=Objective)
    pruner: Pruner | None = None
    seed: int = Field(0, ge=0)
    start_with: list[dict[str, Any]] = Field(default_factory=list, description="configurations TPE tries first")
    kfold: int | None = Field(None, ge=2, le=20, description="K-fold ensemble: the trials are the K folds of the base")

    # ---- what the study will run
    def epochs_per_run(self, base_config: dict) -> int:
        return parse_config(base_config).train.epochs

    def grid(self) -> list[dict]:
        """Every combination of the factors' levels (grid strategy)."""
        paths = list(self.factors)
        return [dict(zip(paths, combo)) for combo in itertools.product(*(self.factors[p] for p in paths))]

    def n_configs(self, base_config: dict) -> int:
        """Configurations the study will try: the grid, or the budget (trials and/or total epochs)."""
        limits = [len(self.grid())] if self.strategy == "grid" else []
        if self.budget.trials:
            limits.append(self.budget.trials)
        if self.budget.epochs:
            limits.append(max(1, self.budget.epochs // (self.epochs_per_run(base_config) * self.repeats)))
        return min(limits)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def set_dotted(config: dict, path: str, value) -> dict:
    """A copy of `config` with the field at dotted `path` set to `value`."""
    out = copy.deepcopy(config)
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
        if not isinstance(node.get(p, {}), dict):
            raise ConfigError([(path, f"{p} is not a section")])
        node = node.setdefault(p, {})
    node[leaf] = value
    return out


def apply_params(base_config: dict, params: dict, seed: int | None = None) -> dict:
    cfg = copy.deepcopy(base_config)
    for path, value in params.items():
        cfg = set_dotted(cfg, path, value)
    if seed is not None:
        cfg = set_dotted(cfg, "train.seed", seed)
    return cfg


def _factor_errors(path: str, levels, base_config: dict) -> list[tuple[str, str]]:
    """Each level (or a range's bounds) applied to the base and validated by the engine's schema."""
    if path in ("train.seed",):
        return [(f"factors.{path}", "the seed is set by repeats, not a factor")]
    values = levels if isinstance(levels, list) else _range_probes(levels)
    for i, value in enumerate(values):
        where = f"factors.{path}" + (f"[{i}]" if isinstance(levels, list) else "")
        try:
            parse_config(set_dotted(base_config, path, value))
        except ConfigError as exc:
            if any("not permitted" in m for _, m in exc.errors):
                return [(f"factors.{path}", f"unknown config field {path}")]
            mine = [m for loc, m in exc.errors if loc == path or loc.startswith(path + ".")]
            return [(where, (mine or [f"{loc}: {m}" for loc, m in exc.errors])[0])]
    return []


def _range_probes(r: Range) -> list:
    if r.kind == "int":
        return [int(r.low), int(r.high)]
    return [r.low, r.high, math.sqrt(r.low * r.high) if r.kind == "log" else (r.low + r.high) / 2]


def _factor_shape_errors(factors) -> list[tuple[str, str]]:
    """Each factor is a non-empty list of distinct levels or a range {low, high, kind}."""
    if not isinstance(factors, dict):
        return []  # the model says so
    errors = []
    for path, levels in factors.items():
        where = f"factors.{path}"
        if isinstance(levels, dict):
            try:
                Range.model_validate(levels)
            except ValidationError as exc:
                errors += [
                    (where + ("." + loc if loc != "(root)" else ""), m) for loc, m in errors_from_validation(exc)
                ]
        elif not isinstance(levels, list):
            errors.append((where, "give a list of levels or a range {low, high, kind}"))
        elif not levels:
            errors.append((where, "give at least one level"))
        elif len({repr(v) for v in levels}) != len(levels):
            errors.append((where, "a level is repeated"))
    return errors


def _kfold_errors(spec: StudySpec) -> list[tuple[str, str]]:
    """A K-fold study is one grid over its folds, each fold trained once and never pruned."""
    refused = [
        ("repeats", spec.repeats != 1, "a K-fold study trains each fold once (one seed): leave repeats at 1"),
        ("strategy", spec.strategy != "grid", "a K-fold study runs every fold (grid): leave strategy out"),
        ("budget", bool(spec.budget.trials or spec.budget.epochs), "a K-fold study runs all K folds: no budget"),
        ("pruner", spec.pruner is not None, "a pruned fold would leave the ensemble without it: no pruner"),
        ("start_with", bool(spec.start_with), "a K-fold study has no points to try first"),
    ]
    return [(field, message) for field, bad, message in refused if bad]


def _kfold_factors(data: dict) -> tuple[dict, list[tuple[str, str]]]:
    """A K-fold study's file with its one factor (data.fold) stood in for validation; the real levels
    are set once K is valid. Factors of its own are refused (one ensemble per study), except the very
    factor the study file of a K-fold study is written with (study yaml)."""
    k, given = data["kfold"], data.get("factors")
    written = isinstance(k, int) and given == {"data.fold": list(range(k))}
    errors = []
    if given not in (None, {}) and not written:
        errors.append(("factors", "a K-fold study's trials are its folds: give no factors (one study per setting)"))
    return {**data, "factors": {"data.fold": [0]}}, errors


def _design_errors(spec: StudySpec) -> list[tuple[str, str]]:
    """What fits together: grid takes levels, random/TPE need a budget, start_with names factors."""
    if spec.kfold is not None:
        return _kfold_errors(spec)
    errors = []
    if spec.strategy == "grid":
        errors += [
            (f"factors.{p}", "a range needs strategy random or tpe (grid takes levels)")
            for p, v in spec.factors.items()
            if isinstance(v, Range)
        ]
    elif not (spec.budget.trials or spec.budget.epochs):
        errors.append(("budget", f"strategy {spec.strategy} needs budget.trials or budget.epochs"))
    for i, point in enumerate(spec.start_with):
        unknown = sorted(set(point) - set(spec.factors))
        if unknown:
            errors.append((f"start_with[{i}]", f"{unknown[0]} is not a factor"))
    return errors


def parse_study(data: Any, base_config: dict | None = None) -> tuple[StudySpec | None, dict | None, list]:
    """(spec, resolved base config, errors). `base_config` is the base already resolved (a past run's
    or a preset's config); without it `data["base"]` must be a config itself."""
    if not isinstance(data, dict):
        return None, None, [("(root)", "a study file is a mapping (base, factors, repeats, strategy, objective)")]
    kfold_errors: list[tuple[str, str]] = []
    if data.get("kfold") is not None:
        data, kfold_errors = _kfold_factors(data)
    shape_errors = _factor_shape_errors(data.get("factors"))
    if shape_errors:
        data = {**data, "factors": {"placeholder": [0]}}
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        errors = [e for e in errors_from_validation(exc) if not (shape_errors and e[0].startswith("factors"))]
        return None, None, kfold_errors + shape_errors + errors
    errors = (
        kfold_errors
        + shape_errors
        + [e for e in _design_errors(spec) if not (shape_errors and e[0].startswith(("factors", "start")))]
    )
    if errors:
        return None, None, errors
    base = base_config if base_config is not None else spec.base
    try:
        parse_config(base)
        if spec.kfold is not None:  # every fold of the base: data.kfold = K, data.fold the study's one factor
            spec.factors = {"data.fold": list(range(spec.kfold))}
            base = apply_params(base, {"data.kfold": spec.kfold, "data.fold": 0})
            parse_config(base)
    except ConfigError as exc:
        return None, None, [(f"base.{loc}", msg) for loc, msg in exc.errors]
    errors = [e for path, levels in spec.factors.items() for e in _factor_errors(path, levels, base)]
    if not errors and spec.n_configs(base) * spec.repeats > MAX_RUNS:
        errors.append(("repeats", f"{spec.n_configs(base) * spec.repeats} runs is more than {MAX_RUNS}"))
    return (None, None, errors) if errors else (spec, base, [])
