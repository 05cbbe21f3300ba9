"""Which way is better for each metric the engine records: one definition for the engine (best
checkpoint, early stopping), the DB (best value per metric) and the dashboard (best-of tables)."""

from __future__ import annotations

# Lower is better for these; higher is better for every other metric (acc, f1, images_per_sec, ...).
LOWER_IS_BETTER = frozenset({"loss", "epoch_seconds", "data_wait"})


def base_name(metric: str) -> str:
    """'val_loss' -> 'loss': the config names a metric with its split, the DB stores them apart."""
    for split in ("train_", "val_", "test_"):
        if metric.startswith(split):
            return metric.removeprefix(split)
    return metric


def lower_is_better(metric: str) -> bool:
    return base_name(metric) in LOWER_IS_BETTER


def improvement(metric: str, new: float, old: float) -> float:
    """How much better `new` is than `old` (negative when worse), in the metric's own units."""
    return old - new if lower_is_better(metric) else new - old


def is_better(metric: str, new: float, old: float | None, min_delta: float = 0.0) -> bool:
    """True when `new` beats `old` by more than `min_delta` (always true when there is no `old` yet)."""
    return old is None or improvement(metric, new, old) > min_delta
