"""Compare page logic: which runs, how their configs differ, and the plotly figures that put them side by side.

Pure functions over plain data (DataFrames from db.queries, config dicts); no Streamlit, no DB.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from dashboard import plots_diagnosis
from dashboard.plots import class_names_for, normalise_rows
from engine.metrics import lower_is_better

MIN_RUNS, MAX_RUNS = 2, 10
SPLIT_DASH = {"train": "solid", "val": "dash", "test": "dot"}
PALETTE = qualitative.Plotly + qualitative.D3  # >= 10 distinguishable run colours
MISSING = "—"  # a key one run's config does not have


# ------------------------------------------------------------------------------- selection
def parse_run_ids(value) -> tuple[list[int], list[str]]:
    """'1,2,3' (or ['1', '2'] from repeated query keys) -> ([1, 2, 3], tokens that are not run ids)."""
    if value is None:
        return [], []
    tokens = [value] if isinstance(value, (str, int)) else list(value)
    ids, bad = [], []
    for tok in ",".join(str(t) for t in tokens).replace(" ", ",").split(","):
        if not tok:
            continue
        if tok.isdigit() and int(tok) > 0:
            if int(tok) not in ids:
                ids.append(int(tok))
        else:
            bad.append(tok)
    return ids, bad


def initial_selection(query_value, session_ids, known_ids: Iterable[int]) -> tuple[list[int], list[str]]:
    """The runs to start from: ?runs=... first, else the Runs page's selection; unknown ids dropped, at most 10."""
    known = set(int(i) for i in known_ids)
    notes: list[str] = []
    ids, bad = parse_run_ids(query_value)
    if bad:
        notes.append(f"ignored in ?runs=: {', '.join(bad)} (not run ids)")
    if not ids and session_ids:
        ids, _ = parse_run_ids([str(i) for i in session_ids])
    missing = [i for i in ids if i not in known]
    if missing:
        notes.append(f"no such run: {', '.join(f'#{i}' for i in missing)}")
    ids = [i for i in ids if i in known]
    if len(ids) > MAX_RUNS:
        notes.append(f"showing the first {MAX_RUNS} of {len(ids)} runs (Compare takes at most {MAX_RUNS})")
        ids = ids[:MAX_RUNS]
    return ids, notes


def run_label(run_id: int, name: str | None) -> str:
    return f"#{run_id} {name}".strip() if name else f"#{run_id}"


# ------------------------------------------------------------------------------- config diff
def flatten_config(d: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested config -> {dotted.key: leaf}. Lists of mappings (augment steps) get an index: augment.train[0].name."""
    out: dict[str, object] = {}
    for key, value in d.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            if value:
                out.update(flatten_config(value, path))
            else:
                out[path] = {}
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            out[path] = "[" + ", ".join(str(item.get("name", "{…}")) for item in value) + "]"  # the steps at a glance
            for i, item in enumerate(value):
                out.update(flatten_config(item, f"{path}[{i}]"))
        else:
            out[path] = list(value) if isinstance(value, tuple) else value
    return out


def normalized_config(config: dict) -> dict:
    """Fill defaults through the engine's schema so 'left out' and 'set to the default' compare equal."""
    from engine.config import ConfigError, parse_config

    try:
        return parse_config(config).model_dump(mode="json")
    except (ConfigError, Exception):  # an old or hand-edited config: compare it as stored
        return config


def _display(v) -> str:
    """Config values as text (JSON spelling: true, null, [1, 2]); one column of mixed types breaks Arrow."""
    return v if isinstance(v, str) else json.dumps(v)


def _merged_order(key_lists: Iterable[list[str]]) -> list[str]:
    """All keys, in config order: a key only some runs have goes right after the key it follows there."""
    keys: list[str] = []
    for ks in key_lists:
        prev = None
        for k in ks:
            if k not in keys:
                keys.insert(keys.index(prev) + 1 if prev is not None else 0, k)
            prev = k
    return keys


def config_diff(configs: Mapping[str, dict], normalize: bool = True) -> pd.DataFrame:
    """Rows: the dotted config keys whose values are not the same in every run; columns: runs. Values as text."""
    flat = {label: flatten_config(normalized_config(c) if normalize else c) for label, c in configs.items()}
    keys = _merged_order(list(f) for f in flat.values())
    rows = {}
    for key in _taking_effect(keys, list(configs.values())):
        values = [_display(f[key]) if key in f else MISSING for f in flat.values()]
        if len(set(values)) > 1:
            rows[key] = values
    df = pd.DataFrame.from_dict(rows, orient="index", columns=list(flat)) if rows else pd.DataFrame(columns=list(flat))
    df.index.name = "field"
    return df


def _taking_effect(keys: list[str], configs: list[dict]) -> list[str]:
    """The keys that change what a run does in at least one of the configs: a field the builder hides for
    a config (stage widths of a model that has no stages) has no effect there, whatever its value."""
    from dashboard.forms import field_specs, is_relevant

    specs = {s.path: s for s in field_specs()}
    return [k for k in keys if k not in specs or any(is_relevant(specs[k], c) for c in configs)]


# ------------------------------------------------------------------------------- curves
def ema_smooth(values: Iterable[float], weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average, debiased so the first points are not pulled to 0."""
    v = np.asarray(list(values), dtype=np.float64)
    if weight <= 0 or len(v) == 0:
        return v
    out = np.empty_like(v)
    acc, norm = 0.0, 0.0
    for i, x in enumerate(v):
        acc = weight * acc + (1 - weight) * x
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def metric_names(history: pd.DataFrame) -> list[str]:
    """Metrics present in a history, headline ones first."""
    names = sorted(history["name"].unique()) if len(history) else []
    first = [n for n in ("acc", "loss", "lr") if n in names]
    return first + [n for n in names if n not in first]


def splits_for(history: pd.DataFrame, metric: str) -> list[str]:
    """The splits a metric was recorded on, train / val / test first."""
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(history.loc[history["name"] == metric, "split"].unique(), key=lambda s: (order.get(s, 9), s))


def curves_figure(
    history: pd.DataFrame,
    metric: str,
    labels: Mapping[int, str],
    splits: Iterable[str] = ("train", "val"),
    smoothing: float = 0.0,
    log_y: bool = False,
) -> go.Figure:
    """One line per (run, split): colour = run, dash = split. Hover shows the raw value even when smoothed.
    Each run's best epoch (by the val value of `metric`) is starred, an overfitting onset crossed."""
    fig = go.Figure()
    h = history[history["name"] == metric].sort_values("epoch")
    groups = {key: g for key, g in h.groupby(["run_id", "split"], sort=False)}  # one pass, not a mask per trace
    traces = []
    for i, (run_id, label) in enumerate(labels.items()):
        colour = PALETTE[i % len(PALETTE)]
        for split in splits:
            d = groups.get((run_id, split))
            if d is None or d.empty:
                continue
            raw = d["value"].to_numpy()
            y = ema_smooth(raw, smoothing) if smoothing > 0 else raw
            traces.append(
                go.Scatter(
                    x=d["epoch"].to_numpy(),
                    y=y,
                    mode="lines+markers" if len(d) < 30 else "lines",
                    name=f"{label} · {split}",
                    legendgroup=label,
                    line={"color": colour, "dash": SPLIT_DASH.get(split, "dashdot")},
                    customdata=raw,
                    hovertemplate=(
                        f"<b>{label}</b> {split}<br>epoch %{{x}}<br>{metric} %{{y:.4g}}"
                        + (" (raw %{customdata:.4g})" if smoothing > 0 else "")
                        + "<extra></extra>"
                    ),
                )
            )
    fig.add_traces(traces)
    if metric in ("acc", "loss"):  # curves that read themselves: best epoch (star), overfitting onset (cross)
        readings = plots_diagnosis.compare_readings(history, labels, f"val_{metric}")
        plots_diagnosis.mark_compare(fig, labels, readings, log_y)
    short = len(h) and h["epoch"].max() <= 20
    fig.update_layout(
        xaxis_title="epoch",
        xaxis_dtick=1 if short else None,  # whole epochs, not 1.2
        yaxis_title=metric + (" (EMA-smoothed)" if smoothing > 0 else ""),
        yaxis_type="log" if log_y else "linear",
        hovermode="closest",
        legend_title_text="run · split",
        margin={"t": 30},
    )
    return fig


# ------------------------------------------------------------------------------- best / final table
def best_final_table(
    latest: pd.DataFrame,
    labels: Mapping[int, str],
    metrics: Iterable[tuple[str, str]] = (("val", "acc"), ("val", "loss"), ("train", "acc"), ("train", "loss")),
) -> pd.DataFrame:
    """One row per run: best value (and its epoch) and final value of each metric, plus test accuracy.

    `latest` is db.queries.latest_metrics: the small table kept current on every write.
    """
    found = {(r.run_id, r.split, r.name): r for r in latest.itertuples(index=False)}
    rows = []
    for run_id, label in labels.items():
        row: dict[str, object] = {"run": label}
        for split, name in metrics:
            m = found.get((run_id, split, name))
            row[f"best {split} {name}"] = m.best_value if m else np.nan
            row[f"best {split} {name} epoch"] = int(m.best_epoch) if m else None
            row[f"final {split} {name}"] = m.value if m else np.nan
        t = found.get((run_id, "test", "acc"))
        row["test acc"] = t.value if t else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def best_run(table: pd.DataFrame, column: str = "best val acc") -> str | None:
    """The run with the best value in `column` ('best val loss': the lowest, 'best val acc': the highest)."""
    if table.empty or column not in table or table[column].isna().all():
        return None
    lowest = lower_is_better(column.rsplit(" ", 1)[-1])
    return str(table[column].idxmin() if lowest else table[column].idxmax())


HEADLINE_METRICS = ("best val acc", "best val loss", "test acc", "final val acc", "final val loss")


def _best_of(values: pd.Series, column: str) -> pd.Series:
    """The entries of `values` equal (within float noise) to its best value for `column`."""
    values = values.dropna()
    best = values.min() if lower_is_better(column.rsplit(" ", 1)[-1]) else values.max()
    return values[np.isclose(values, best, rtol=0, atol=1e-9)]


def best_with_ties(table: pd.DataFrame, column: str, tiebreaks: Iterable[str] = HEADLINE_METRICS) -> dict | None:
    """The best run by `column`, and how a tie on it was settled: {"best", "value", "tied" (runs sharing the
    best value), "decided_by" (the metric that broke the tie, None if there was none or nothing broke it)}."""
    if table.empty or column not in table or table[column].isna().all():
        return None
    tied = _best_of(table[column], column)
    value = float(tied.iloc[0])
    candidates, decided_by = list(tied.index), None
    for other in (c for c in tiebreaks if c != column and c in table):
        if len(candidates) < 2:
            break
        narrowed = _best_of(table.loc[candidates, other], other)
        if 0 < len(narrowed) < len(candidates):
            candidates, decided_by = list(narrowed.index), other
    return {"best": str(candidates[0]), "value": value, "tied": [str(r) for r in tied.index], "decided_by": decided_by}


def best_headline(table: pd.DataFrame, column: str, escape=str) -> str | None:
    """One markdown line naming the best run by `column`, saying which runs tie on it and what decided.
    `escape` makes a run label literal markdown (labels are user text)."""
    found = best_with_ties(table, column)
    if found is None:
        return None
    line = f"Best run by {column}: **{escape(found['best'])}** ({found['value']:.4f})"
    others = [r for r in found["tied"] if r != found["best"]]
    if not others:
        return line + "."
    line += f", tied with {escape(', '.join(others))}"
    if found["decided_by"]:
        return (
            line
            + f"; the tie is broken by {found['decided_by']} ({table.loc[found['best'], found['decided_by']]:.4f})."
        )
    return line + "; no other metric separates them, so the first listed is named."


# ------------------------------------------------------------------------------- confusion matrices
def _grid_axes(n: int, cols: int, hgap: float = 0.06, vgap: float = 0.1) -> list[tuple[str, dict, dict]]:
    """Axis ids and domains of an n-panel grid, row by row (what make_subplots does, without its ~80 ms)."""
    rows = math.ceil(n / cols)
    w, h = (1 - hgap * (cols - 1)) / cols, (1 - vgap * (rows - 1)) / rows
    out = []
    for i in range(n):
        r, c = divmod(i, cols)
        x0, y1 = c * (w + hgap), 1 - r * (h + vgap)
        k = "" if i == 0 else str(i + 1)
        clip = lambda v: min(1.0, max(0.0, round(v, 6)))  # noqa: E731  (float sums land just outside [0, 1])
        out.append(
            (
                k,
                {"domain": [clip(x0), clip(x0 + w)], "anchor": f"y{k}"},
                {"domain": [clip(y1 - h), clip(y1)], "anchor": f"x{k}"},
            )
        )
    return out


def confusion_grid_figure(
    matrices: Mapping[str, list], class_names: list[str], normalize: bool = True, cols: int = 3
) -> go.Figure:
    """Confusion matrices side by side (rows = true class, columns = predicted), one shared colour scale.
    The row labels (the same classes in every panel) are shown on the first column only, so long class
    names never run into the neighbour matrix; long column labels are slanted, and the rows are spaced
    by pixels (tick labels, axis title, the next panel's title) so no title sits on an axis above it."""
    labels = list(matrices)
    cols = max(1, min(cols, len(labels)))
    nrows = math.ceil(len(labels) / cols) if labels else 1
    longest = max((len(n) for n in class_names_for(len(next(iter(matrices.values()), [])), class_names)), default=1)
    slanted = longest > 2
    panel_px, gap_px = 300, 70 + (6 * min(longest, 14) if slanted else 14)  # gap: x ticks + "predicted" + title
    top, bottom = 40, gap_px - 20
    plot_px = nrows * panel_px + (nrows - 1) * gap_px
    vgap = gap_px / plot_px if nrows > 1 else 0.1
    traces, layout, titles = [], {}, []
    for i, (label, (k, xaxis, yaxis)) in enumerate(zip(labels, _grid_axes(len(labels), cols, hgap=0.07, vgap=vgap))):
        counts = np.asarray(matrices[label], dtype=np.float64)
        z = normalise_rows(counts) if normalize else counts
        names = class_names_for(len(counts), class_names)
        traces.append(
            go.Heatmap(
                z=z,
                x=names,
                y=names,
                coloraxis="coloraxis",
                customdata=counts,
                xaxis=f"x{k}",
                yaxis=f"y{k}",
                hovertemplate=(
                    f"<b>{label}</b><br>true %{{y}}<br>predicted %{{x}}<br>"
                    + ("rate %{z:.3f} (%{customdata:.0f} images)" if normalize else "%{z:.0f} images")
                    + "<extra></extra>"
                ),
            )
        )
        # category axes: class names '0'..'9' are labels, not numbers
        layout[f"xaxis{k}"] = {
            **xaxis,
            "type": "category",
            "title": {"text": "predicted", "standoff": 4},
            "tickangle": -45 if slanted else 0,
            "automargin": True,
        }
        first = i % cols == 0
        layout[f"yaxis{k}"] = {
            **yaxis,
            "type": "category",
            "autorange": "reversed",
            "showticklabels": first,
            "automargin": True,
            **({"title": {"text": "true"}} if first else {}),
        }
        titles.append(
            {
                "text": f"<b>{label}</b>",
                "x": sum(xaxis["domain"]) / 2,
                "y": yaxis["domain"][1],
                "xref": "paper",
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "yshift": 2,
                "showarrow": False,
            }
        )
    fig = go.Figure(data=traces)
    fig.update_layout(
        **layout,
        annotations=titles,
        height=plot_px + top + bottom,
        margin={"t": top, "b": bottom},
        coloraxis={"colorscale": "Blues", "colorbar": {"title": {"text": "rate" if normalize else "count"}}},
    )
    return fig


def confusion_difference_figure(a: list, b: list, label_a: str, label_b: str, class_names: list[str]) -> go.Figure:
    """Row-normalised B − A: red where B confuses (or gets right) more often than A, blue where less."""
    za, zb = normalise_rows(a), normalise_rows(b)
    if za.shape != zb.shape:
        raise ValueError(f"the runs have different numbers of classes ({za.shape[0]} vs {zb.shape[0]})")
    diff = zb - za
    names = class_names_for(len(diff), class_names)
    lim = max(float(np.abs(diff).max()), 1e-6)
    fig = go.Figure(
        go.Heatmap(
            z=diff,
            x=names,
            y=names,
            zmid=0,
            zmin=-lim,
            zmax=lim,
            colorscale="RdBu_r",
            customdata=np.stack([za, zb], axis=-1),
            colorbar={"title": "B − A"},
            hovertemplate=(
                f"true %{{y}}<br>predicted %{{x}}<br>{label_a}: %{{customdata[0]:.3f}}<br>"
                f"{label_b}: %{{customdata[1]:.3f}}<br>B − A: %{{z:+.3f}}<extra></extra>"
            ),
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="true", type="category")
    fig.update_xaxes(title_text="predicted", type="category")
    fig.update_layout(title=f"B = {label_b} minus A = {label_a} (row-normalised)", height=460, margin={"t": 50})
    return fig


# ------------------------------------------------------------------------------- per-class and TTA bars
PER_CLASS_METRICS = {"accuracy (recall)": "recall", "F1": "f1", "precision": "precision"}


def per_class_figure(per_class: Mapping[str, dict], class_names: list[str], metric: str = "recall") -> go.Figure:
    """Grouped bars: x = class, one bar per run. `per_class` maps run label -> evaluation per_class dict."""
    fig = go.Figure()
    for i, (label, pc) in enumerate(per_class.items()):
        values = [float(v) for v in (pc or {}).get(metric, [])]
        if not values:
            continue
        names = class_names_for(len(values), class_names)
        support = (pc or {}).get("support") or [None] * len(values)
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=label,
                marker_color=PALETTE[i % len(PALETTE)],
                customdata=[s if s is not None else float("nan") for s in support],
                hovertemplate=f"<b>{label}</b><br>class %{{x}}<br>{metric} %{{y:.3f}}"
                "<br>support %{customdata:.0f}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis_title="class",
        xaxis_type="category",
        yaxis_title=metric,
        yaxis_range=[0, 1.02],
        legend_title_text="run",
        margin={"t": 30},
    )
    return fig


def per_class_table(
    per_class: Mapping[str, dict], class_names: list[str], metric: str = "recall"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bars as numbers: one row per class, one column per run, plus "best" (the run(s) with the highest
    value, ties joined by " = ") and "support". Also a same-shaped boolean frame marking each class's best
    cells, for highlighting."""
    columns = {label: [float(v) for v in (pc or {}).get(metric, [])] for label, pc in per_class.items()}
    columns = {label: v for label, v in columns.items() if v}
    if not columns:
        return pd.DataFrame(), pd.DataFrame()
    n = max(len(v) for v in columns.values())
    table = pd.DataFrame({label: v + [float("nan")] * (n - len(v)) for label, v in columns.items()})
    table.index = class_names_for(n, class_names)
    table.index.name = "class"
    is_best = table.eq(table.max(axis=1), axis=0) & table.notna()
    best = [" = ".join(c for c in table.columns if is_best.loc[i, c]) or "–" for i in table.index]
    support = next(((pc or {}).get("support") for pc in per_class.values() if (pc or {}).get("support")), None)
    out = table.assign(best=best)
    if support is not None and len(support) == n:
        out["support"] = [int(s) for s in support]
    return out, is_best


def tta_figure(tta: pd.DataFrame, labels: Mapping[int, str]) -> go.Figure:
    """Grouped bars: x = TTA variant, one bar per run, y = test accuracy ('none' = no TTA)."""
    fig = go.Figure()
    if tta.empty:
        return fig
    variants = list(dict.fromkeys(tta["variant"]))
    acc: dict[int, dict[str, float]] = {}
    for r in tta.itertuples(index=False):  # later rows win, as drop_duplicates(keep="last")
        acc.setdefault(r.run_id, {})[r.variant] = float(r.accuracy)
    traces = []
    for i, (run_id, label) in enumerate(labels.items()):
        d = acc.get(run_id)
        if not d:
            continue
        base = d.get("none", float("nan"))
        ys = [d.get(v) for v in variants]
        deltas = [(y - base) if y is not None else float("nan") for y in ys]
        traces.append(
            go.Bar(
                x=variants,
                y=ys,
                name=label,
                marker_color=PALETTE[i % len(PALETTE)],
                customdata=deltas,
                hovertemplate=f"<b>{label}</b><br>%{{x}}<br>accuracy %{{y:.4f}}"
                "<br>vs none %{customdata:+.4f}<extra></extra>",
            )
        )
    fig.add_traces(traces)
    lo = float(tta["accuracy"].min())
    fig.update_layout(
        barmode="group",
        xaxis_title="TTA variant",
        yaxis_title="test accuracy",
        yaxis_range=[max(0.0, lo - 0.05), 1.0],
        legend_title_text="run",
        margin={"t": 30},
    )
    return fig


def tta_table(tta: pd.DataFrame, labels: Mapping[int, str]) -> pd.DataFrame:
    """Runs × variants accuracy table (what the bars show, for copying)."""
    if tta.empty:
        return pd.DataFrame()
    d = tta.drop_duplicates(["run_id", "variant"], keep="last").pivot(
        index="run_id", columns="variant", values="accuracy"
    )
    d = d.reindex([r for r in labels if r in d.index])
    d.index = [labels[r] for r in d.index]
    return d[list(dict.fromkeys(tta["variant"]))]


# ------------------------------------------------------------------------------- datasets page
def class_counts_figure(summary: dict) -> go.Figure:
    """Grouped bars of images per class, train and (when the dataset has one) test."""
    names = [str(n) for n in summary.get("class_names") or []]
    fig = go.Figure()
    for split, key, colour in (("train", "class_counts", PALETTE[0]), ("test", "test_class_counts", PALETTE[1])):
        counts = summary.get(key)
        if counts:
            fig.add_trace(
                go.Bar(
                    x=class_names_for(len(counts), names),
                    y=counts,
                    name=split,
                    marker_color=colour,
                    hovertemplate=f"{split}<br>class %{{x}}<br>%{{y}} images<extra></extra>",
                )
            )
    fig.update_layout(
        barmode="group",
        xaxis_title="class",
        xaxis_type="category",
        yaxis_title="images",
        legend_title_text="split",
        margin={"t": 30},
        height=360,
    )
    return fig


def datasets_table(rows: list[dict]) -> pd.DataFrame:
    """One line per registered dataset, from the stored summaries (no dataset is loaded). A dataset
    registered without one (a built-in) says "not computed" in its stats column, never a row of blanks."""
    out = []
    for d in rows:
        s = d.get("summary") or {}
        out.append(
            {
                "name": d["name"],
                "kind": d["kind"],
                "path": d["path"],
                "classes": s.get("num_classes"),
                "train": s.get("train_count"),
                "val": s.get("val_count") or None,  # None: carved from train (data.val_fraction)
                "test": s.get("test_count"),
                "image": "×".join(str(x) for x in s["image_shape"]) if s.get("image_shape") else None,
                "mean": ", ".join(f"{v:.3f}" for v in s["mean"]) if s.get("mean") else None,
                "std": ", ".join(f"{v:.3f}" for v in s["std"]) if s.get("std") else None,
                "stats": "computed" if s else "not computed",
            }
        )
    return pd.DataFrame(
        out, columns=["name", "kind", "path", "classes", "train", "val", "test", "image", "mean", "std", "stats"]
    )
