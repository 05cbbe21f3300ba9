"""Cached reads for every page: st.cache_data around db.queries, st.cache_resource around loaded datasets.

Live data is cached by what makes it change (a run's epochs_done and status) rather than by a
clock, so a page polling every 2 s re-reads the metric history only when an epoch has finished.
The run list gets a short TTL: it is one query on runs + latest_metrics, fast at 1,000 runs.
The Compare page reads several runs at once with a 5 s TTL (its Refresh button clears them).
"""

from __future__ import annotations

import streamlit as st

from dashboard import plots
from dashboard.plots import class_names_for
from db import queries


@st.cache_data(ttl=3, show_spinner=False)
def runs(url: str):
    return queries.list_runs(url)


@st.cache_data(max_entries=64, show_spinner=False)
def history(url: str, run_id: int, epochs_done: int, status: str):
    return queries.metric_history(url, [run_id])


@st.cache_data(max_entries=64, show_spinner=False)
def history_wide(url: str, run_id: int, epochs_done: int, status: str):
    """The run's history as one row per epoch (plots.history_wide), pivoted once per new epoch."""
    return plots.history_wide(history(url, run_id, epochs_done, status))


@st.cache_resource(max_entries=32, show_spinner=False)
def learning_curves(url: str, run_id: int, epochs_done: int, status: str, best_metric: str):
    """Run detail's learning-curve figure, built once per (run, epochs done, status): plotly takes a good
    part of a rerun to build a 2 x 2 figure. Shared, not copied (cache_resource): pages only draw it."""
    wide = history_wide(url, run_id, epochs_done, status)
    return plots.learning_curves(history(url, run_id, epochs_done, status), best_metric=best_metric, wide=wide)


@st.cache_data(max_entries=64, show_spinner=False)
def confusions(url: str, run_id: int, split: str, epochs_done: int, status: str) -> dict[int, list]:
    return queries.confusion_matrices(url, run_id, split)


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def evaluations(url: str, run_id: int, status: str) -> list[dict]:
    return queries.evaluations(url, run_id, with_predictions=True)


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def tta(url: str, run_id: int, status: str):
    return queries.tta_results(url, [run_id])


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def checkpoints(url: str, run_id: int, epochs_done: int, status: str) -> list[dict]:
    return queries.checkpoints(url, run_id)


def clear_run_caches() -> None:
    """After an action that changes a run outside the engine (evaluate, stop, delete, tags)."""
    for fn in (runs, evaluations, tta, checkpoints, learning_curves):
        fn.clear()


# ------------------------------------------------------------------- several runs (Compare, Augmentations)
@st.cache_data(ttl=5, show_spinner=False)
def run_choices(url: str):
    return queries.run_choices(url)


@st.cache_data(ttl=5, show_spinner=False)
def runs_with_configs(url: str, ids: tuple[int, ...]) -> list[dict]:
    return queries.runs_with_configs(url, list(ids))


@st.cache_data(ttl=60, show_spinner=False)
def run_config(url: str, run_id: int) -> dict:
    found = queries.runs_with_configs(url, [run_id])
    return found[0]["config"] if found else {}


@st.cache_data(ttl=5, show_spinner=False)
def histories(url: str, ids: tuple[int, ...]):
    return queries.metric_history(url, list(ids))


@st.cache_data(ttl=5, show_spinner=False)
def latest_metrics(url: str, ids: tuple[int, ...]):
    return queries.latest_metrics(url, list(ids))


@st.cache_data(ttl=5, show_spinner=False)
def final_evaluations(url: str, ids: tuple[int, ...], split: str) -> dict[int, dict]:
    return queries.final_evaluations(url, list(ids), split)


@st.cache_data(ttl=5, show_spinner=False)
def last_confusions(url: str, ids: tuple[int, ...], split: str) -> dict[int, tuple[int, list]]:
    found = {i: queries.latest_confusion(url, i, split) for i in ids}
    return {i: m for i, m in found.items() if m is not None}


@st.cache_data(ttl=5, show_spinner=False)
def tta_of(url: str, ids: tuple[int, ...]):
    return queries.tta_results(url, list(ids))


# ------------------------------------------------------------------------------- datasets
@st.cache_data(ttl=10, show_spinner=False)
def datasets(url: str) -> list[dict]:
    return queries.list_datasets(url)


def dataset_names(url: str) -> list[str]:
    return [d["name"] for d in datasets(url)]


def dataset_class_names(url: str, name: str) -> list[str]:
    """A registered dataset's class names as its row records them (summary, else options); [] if unknown."""
    row = next((d for d in datasets(url) if d["name"] == name), None)
    if row is None:
        return []
    return list((row.get("summary") or {}).get("class_names") or (row.get("options") or {}).get("class_names") or [])


@st.cache_resource(max_entries=2, show_spinner="Loading the dataset…")
def dataset_arrays(url: str, name: str):
    """A registered dataset, loaded. A resource, not data: the arrays are shared read-only instead of
    pickled and copied on every rerun."""
    from control.dataset_registry import load_registered

    return load_registered(url, name)


def clear_dataset_caches() -> None:
    """After registering, replacing or summarising a dataset."""
    datasets.clear()
    dataset_arrays.clear()


@st.cache_resource(max_entries=3, show_spinner="Loading the dataset…")
def splits(url: str, data_config_json: str):
    """The run's train/val/test split, rebuilt deterministically from its data config (same order as
    the stored predictions). Returns (Splits, None) or (None, error message)."""
    from control.preflight import resolve_dataset
    from engine.config import DataConfig
    from engine.data import load_arrays, make_splits

    try:  # a run from an older schema, or a dataset since removed, must not break the page
        cfg = DataConfig.model_validate_json(data_config_json)
        return make_splits(load_arrays(resolve_dataset(url, cfg.dataset)), cfg), None
    except (ValueError, OSError) as exc:
        return None, str(exc)


def class_names(url: str, data_config_json: str, n: int) -> list[str]:
    """Class names of a run's dataset (from the loaded split), falling back to 0..n-1."""
    sp, _ = splits(url, data_config_json)
    names = list(sp.class_names) if sp is not None else []
    return class_names_for(max(n, len(names)), names)  # n = 0: all of them


@st.cache_data(max_entries=32, show_spinner="Augmenting a few images…")
def augment_preview(url: str, dataset: str, steps_json: str, data_json: str, k: int, n: int, seed: int):
    """The builder's inline preview, cached by (dataset, pipeline): (k originals, (n, k) augmented, their
    class names), from dashboard.augment_preview.preview_grid (the engine's own pipeline code)."""
    import json

    from dashboard import augment_preview as ap

    data = dataset_arrays(url, dataset)
    return ap.preview_grid(data, json.loads(steps_json), json.loads(data_json), k, n, seed)


@st.cache_resource(show_spinner=False)
def transforms() -> list[str]:
    """The transforms a step may use: single-image pixel and spatial ones, the common ones first."""
    from control.image_transforms import image_transforms

    return image_transforms()


@st.cache_resource(show_spinner=False)
def model_catalogue(source: str) -> list[str]:
    """Every model name the library offers (for the builder's suggestions); [] when unavailable."""
    try:
        if source == "timm":
            import timm

            return list(timm.list_models())
        if source == "torchvision":
            import torchvision

            return sorted(torchvision.models.list_models(module=torchvision.models))
    except Exception:
        return []
    return []


# ------------------------------------------------------------------------------- studies
@st.cache_data(ttl=5, show_spinner=False)
def studies_list(url: str) -> list[dict]:
    return queries.list_studies(url)


@st.cache_data(max_entries=16, show_spinner=False)
def study_state(url: str, study_id: int, fingerprint: tuple) -> dict:
    """The study's trials and grouped summary, re-read only when a trial's status or epoch changes."""
    from control.studies import study_state as state

    return state(url, study_id, refresh=False)


@st.cache_data(max_entries=16, show_spinner=False)
def study_curves(url: str, study_id: int, split: str, name: str, fingerprint: tuple):
    return queries.study_curves(url, study_id, split, name)


@st.cache_data(max_entries=16, show_spinner=False)
def study_importance(url: str, study_id: int, n_done: int) -> dict[str, float]:
    from control.studies import param_importance

    return param_importance(url, study_id)


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def run_facts(url: str, run_id: int, status: str) -> dict:
    """runs.facts of one run (init_from, lr_find, ...), re-read when its status changes."""
    return queries.run_facts(url, run_id)
