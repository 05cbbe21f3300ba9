"""Figures and display tables for the Runs and Run detail pages (plotly; no Streamlit import).

Inputs are what db.queries returns (long metric tables, matrices as nested lists, prediction
arrays); outputs are plotly figures, pandas frames ready for st.dataframe, or numpy images.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard import plots_diagnosis
from dashboard.live_text import status_text
from db.models import RunStatus

STATUS_ICONS = {
    RunStatus.QUEUED: "⏳",
    RunStatus.RUNNING: "🏃",
    RunStatus.COMPLETED: "✅",
    RunStatus.FAILED: "❌",
    RunStatus.STOPPED: "⏹️",
    RunStatus.LOST: "❓",
    RunStatus.PRUNED: "✂️",
}
SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
PRF_COLORS = {"precision": "#4c78a8", "recall": "#f58518", "f1": "#54a24b"}


# ------------------------------------------------------------------------------- small formatting
def status_label(status: str | None) -> str:
    return f"{STATUS_ICONS.get(status or '', '•')} {status or '?'}"


def format_duration(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = int(round(float(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def format_pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.2f} %"


# ------------------------------------------------------------------------------- runs table
RUNS_TABLE_COLUMNS = [
    "id",
    "name",
    "status",
    "dataset",
    "model",
    "best_val_acc",
    "test_acc",
    "epochs",
    "duration_min",
    "where",
    "tags",
    "notes",
    "created_at",
]


def where_label(backend, host, device) -> str:
    """Where a run executes: launcher backend, host, device."""
    return " · ".join(str(v) for v in (backend or "local", host, device) if v and str(v) != "nan")


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """list_runs rows -> the Runs page table (one row per run, numeric columns stay numeric for sorting)."""
    if df is None or df.empty:
        return pd.DataFrame(columns=RUNS_TABLE_COLUMNS)
    out = pd.DataFrame(
        {
            "id": df["id"].astype(int),
            "name": df["name"].fillna(""),
            "status": _live_status(df),
            "dataset": df["dataset"].fillna(""),
            "model": df["model"].fillna(""),
            "best_val_acc": df["best_val_acc"].astype(float),
            "test_acc": df["test_acc"].astype(float),
            "epochs": [f"{int(d or 0)} / {int(p or 0)}" for d, p in zip(df["epochs_done"], df["epochs_planned"])],
            "duration_min": df["duration_s"].astype(float) / 60.0,
            "where": [where_label(b, h, d) for b, h, d in zip(df["backend"], df["host"], df["device"])],
            "tags": df["tags"].apply(lambda t: list(t or [])),
            "notes": df["notes"].fillna(""),
            "created_at": pd.to_datetime(df["created_at"]),
        }
    )
    return out.reset_index(drop=True)


def _live_status(df: pd.DataFrame) -> list[str]:
    """The status label, with a running run's live phase: "🏃 running · final evaluation: test 40%"."""
    progress = df["progress"] if "progress" in df else [None] * len(df)
    rows = zip(df["status"], progress, df["epochs_done"], df["epochs_planned"])
    return [status_text(status_label(s), s, p, d, n) for s, p, d, n in rows]


def run_option_label(row) -> str:
    name = f" · {row['name']}" if row.get("name") else ""
    return f"#{int(row['id'])}{name} · {row.get('model', '')} · {status_label(row.get('status'))}"


# ------------------------------------------------------------------------------- learning curves
def history_wide(history: pd.DataFrame) -> pd.DataFrame:
    """Long (epoch, split, name, value) -> one row per epoch, columns '<split>_<name>'."""
    if history is None or history.empty:
        return pd.DataFrame(columns=["epoch"])
    h = history.assign(col=history["split"] + "_" + history["name"])
    # groupby-last-unstack is pivot_table(aggfunc="last") without its generic machinery (5x faster)
    wide = h.groupby(["epoch", "col"], sort=True)["value"].last().unstack("col").dropna(axis=1, how="all")
    wide = wide.reset_index()
    wide.columns.name = None
    return wide.sort_values("epoch")


def metrics_csv(history: pd.DataFrame) -> str:
    return history_wide(history).to_csv(index=False)


def learning_curves(
    history: pd.DataFrame, title: str = "", best_metric: str = "val_acc", wide=None
) -> go.Figure | None:
    """Loss and accuracy (train vs val), learning rate and throughput per epoch, 2 x 2; the best epoch (by
    `best_metric`) and an overfitting onset (engine.diagnose) marked on the loss and accuracy panels.
    `wide`: history_wide(history) when the caller has it already."""
    wide = history_wide(history) if wide is None else wide
    if wide.empty or len(wide.columns) <= 1:
        return None
    fig = make_subplots(
        rows=2,
        cols=2,
        horizontal_spacing=0.09,
        vertical_spacing=0.2,
        subplot_titles=("Loss", "Accuracy", "Learning rate", "Throughput [images/s]"),
    )
    x = wide["epoch"]
    panels = [(1, 1, "loss", ".4f"), (1, 2, "acc", ".2%")]
    for row, col, name, fmt in panels:
        for split in ("train", "val"):
            c = f"{split}_{name}"
            if c in wide:
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=wide[c],
                        mode="lines+markers",
                        name=split,
                        legendgroup=split,
                        showlegend=name == "loss",
                        line=dict(color=SPLIT_COLORS[split]),
                        hovertemplate=f"epoch %{{x}}<br>{split} {name}: %{{y:{fmt}}}<extra></extra>",
                    ),
                    row=row,
                    col=col,
                )
        _ema_companions(fig, wide, name, fmt, row, col)
    if "train_lr" in wide:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=wide["train_lr"],
                mode="lines+markers",
                name="lr",
                showlegend=False,
                line=dict(color="#9467bd"),
                hovertemplate="epoch %{x}<br>lr: %{y:.3g}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    if "train_images_per_sec" in wide:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=wide["train_images_per_sec"],
                mode="lines+markers",
                name="images/s",
                showlegend=False,
                line=dict(color="#8c564b"),
                hovertemplate="epoch %{x}<br>%{y:,.0f} images/s<extra></extra>",
            ),
            row=2,
            col=2,
        )
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    if "train_lr" in wide:  # from zero, so a constant LR reads as a level line, not as noise around 0
        fig.update_yaxes(range=[0, 1.15 * float(wide["train_lr"].max() or 1)], exponentformat="e", row=2, col=1)
    fig.update_xaxes(dtick=_epoch_tick(len(wide)))
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_layout(
        height=520,
        margin=dict(l=10, r=10, t=60 if title else 40, b=10),
        hovermode="x unified",
        title=title or None,
        legend=dict(orientation="h", yanchor="bottom", y=1.07, x=0, xanchor="left"),
    )
    plots_diagnosis.mark_reading(fig, plots_diagnosis.curve_reading(wide, best_metric))
    return fig


def _ema_companions(fig: go.Figure, wide: pd.DataFrame, name: str, fmt: str, row: int, col: int) -> None:
    """With an EMA, validation of the other weights beside the evaluated ones (val_acc_raw beside the EMA's
    val_acc, or val_acc_ema beside the raw val_acc), dashed in the validation colour."""
    for suffix, label in (("raw", "val (raw weights)"), ("ema", "val (EMA weights)")):
        c = f"val_{name}_{suffix}"
        if c in wide:
            fig.add_trace(
                go.Scatter(
                    x=wide["epoch"],
                    y=wide[c],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=name == "loss",
                    line=dict(color=SPLIT_COLORS["val"], dash="dash"),
                    hovertemplate=f"epoch %{{x}}<br>{label} {name}: %{{y:{fmt}}}<extra></extra>",
                ),
                row=row,
                col=col,
            )


def _epoch_tick(n: int):
    return 1 if n <= 12 else None


# ------------------------------------------------------------------------------- confusion matrix
def normalise_rows(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    sums = m.sum(axis=1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)


def class_names_for(n: int, names: list | None) -> list[str]:
    """Exactly n class labels: the given names in order, '<index>' where names run out."""
    given = [str(c) for c in (names or [])][:n]
    return given + [str(i) for i in range(len(given), n)]


def confusion_figure(
    matrix, class_names: list[str] | None = None, normalise: bool = False, title: str = "", clickable: bool = True
) -> go.Figure:
    """Heatmap (rows = true class, columns = predicted). normalise: each row sums to 1 (recall per class).

    With `clickable`, an invisible marker sits on every cell so a click selects (true, predicted)
    through Streamlit's plotly selection (heatmap cells themselves cannot be selected)."""
    counts = np.asarray(matrix, dtype=float)
    n = counts.shape[0]
    names = class_names_for(n, class_names)
    share = normalise_rows(counts)
    z = share if normalise else counts
    text = [
        [(f"{share[i, j]:.0%}" if normalise else f"{int(counts[i, j])}") if counts[i, j] else "" for j in range(n)]
        for i in range(n)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            colorscale="Blues",
            text=text,
            texttemplate="%{text}" if n <= 20 else None,
            hoverinfo="skip" if clickable else None,
            zmin=0,
            zmax=1 if normalise else None,
            colorbar=dict(title="share of row" if normalise else "images", thickness=12),
            hovertemplate=None if clickable else "true %{y}<br>predicted %{x}<br>%{z}<extra></extra>",
        )
    )
    if clickable:
        ii, jj = np.meshgrid(range(n), range(n), indexing="ij")
        custom = np.stack([counts[ii, jj].ravel(), share[ii, jj].ravel(), ii.ravel(), jj.ravel()], axis=1)
        fig.add_trace(
            go.Scatter(
                x=[names[j] for j in jj.ravel()],
                y=[names[i] for i in ii.ravel()],
                mode="markers",
                marker=dict(symbol="square", size=max(6, min(40, 360 // max(n, 1))), opacity=0.0, color="#000"),
                customdata=custom,
                showlegend=False,
                name="",
                hovertemplate="true <b>%{y}</b> → predicted <b>%{x}</b><br>%{customdata[0]:.0f} images "
                "(%{customdata[1]:.1%} of true %{y})<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="predicted class", type="category", side="bottom", showgrid=False)
    fig.update_yaxes(title_text="true class", type="category", autorange="reversed", showgrid=False)
    size = max(360, min(720, 40 * n + 140))
    fig.update_layout(
        height=size,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        title=title or None,
        dragmode=False,
        clickmode="event+select",
    )
    return fig


def cell_from_selection(selection, class_names: list[str]) -> tuple[int, int] | None:
    """Streamlit plotly selection -> (true index, predicted index) of the clicked cell, if any.

    The browser sends customdata back as a mapping {"0": count, "1": share, "2": true, "3": pred}."""
    names = [str(c) for c in class_names]
    for p in (selection or {}).get("points") or []:
        cd = p.get("customdata")
        if isinstance(cd, dict) and "2" in cd and "3" in cd:
            return int(cd["2"]), int(cd["3"])
        if isinstance(cd, (list, tuple)) and len(cd) >= 4:
            return int(cd[2]), int(cd[3])
        if str(p.get("y")) in names and str(p.get("x")) in names:
            return names.index(str(p["y"])), names.index(str(p["x"]))
    return None


def top_confusions(matrix, class_names: list[str], k: int = 5) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells: (true, predicted, count), largest first."""
    m = np.asarray(matrix, dtype=int).copy()
    np.fill_diagonal(m, 0)
    flat = np.argsort(m, axis=None)[::-1][:k]
    return [(int(i), int(j), int(m[i, j])) for i, j in zip(*np.unravel_index(flat, m.shape)) if m[i, j] > 0]


# ------------------------------------------------------------------------------- per class
def per_class_frame(per_class: dict, class_names: list[str]) -> pd.DataFrame:
    n = len(per_class.get("f1", []))
    names = class_names_for(n, class_names)
    df = pd.DataFrame({"class": names})
    for k in ("precision", "recall", "f1", "support"):
        if k in per_class:
            df[k] = [float(v) for v in per_class[k]]
    if "support" in df:
        df["support"] = df["support"].astype(int)
    return df


def per_class_bars(per_class: dict, class_names: list[str]) -> go.Figure:
    df = per_class_frame(per_class, class_names)
    fig = go.Figure()
    for metric in ("precision", "recall", "f1"):
        if metric in df:
            fig.add_bar(
                x=df["class"],
                y=df[metric],
                name=metric,
                marker_color=PRF_COLORS[metric],
                customdata=df.get("support"),
                hovertemplate=f"class %{{x}}<br>{metric}: %{{y:.3f}}<br>support: %{{customdata}}<extra></extra>",
            )
    fig.update_layout(
        barmode="group",
        height=360,
        margin=dict(l=10, r=10, t=10, b=10),
        yaxis=dict(range=[0, 1.02], tickformat=".0%"),
        xaxis=dict(type="category", title="class"),
        legend=dict(orientation="h", y=1.08, x=0, xanchor="left"),
    )
    return fig


# ------------------------------------------------------------------------------- TTA
def tta_frame(tta: pd.DataFrame, descriptions: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (checkpoint, variant): accuracy and gain over the plain prediction in points."""
    if tta is None or tta.empty:
        return pd.DataFrame(columns=["checkpoint", "variant", "accuracy", "gain_pp", "description"])
    rows = []
    for (split, ckpt), group in tta.groupby(["split", "checkpoint"], sort=False):
        base = group.loc[group["variant"] == "none", "accuracy"]
        base = float(base.iloc[0]) if len(base) else None
        for _, r in group.iterrows():
            rows.append(
                {
                    "split": split,
                    "checkpoint": ckpt,
                    "variant": r["variant"],
                    "accuracy": float(r["accuracy"]),
                    "gain_pp": None if base is None else 100 * (float(r["accuracy"]) - base),
                    "description": (descriptions or {}).get(r["variant"], ""),
                }
            )
    return pd.DataFrame(rows)


def tta_bars(tta: pd.DataFrame, descriptions: dict[str, str] | None = None) -> go.Figure:
    df = tta_frame(tta, descriptions)
    fig = go.Figure()
    for ckpt, group in df.groupby("checkpoint", sort=False):
        fig.add_bar(
            x=group["variant"],
            y=group["accuracy"],
            name=str(ckpt),
            customdata=np.stack([group["gain_pp"].fillna(0), group["description"]], axis=1),
            text=[f"{a:.2%}" for a in group["accuracy"]],
            textposition="outside",
            hovertemplate="%{x}: %{y:.3%}<br>%{customdata[0]:+.2f} pp vs none<br>%{customdata[1]}<extra></extra>",
        )
    lo = max(0.0, float(df["accuracy"].min()) - 0.05) if len(df) else 0.0
    fig.update_layout(
        barmode="group",
        height=340,
        margin=dict(l=10, r=10, t=10, b=10),
        yaxis=dict(range=[lo, 1.0], tickformat=".0%", title="test accuracy"),
        legend=dict(title="checkpoint", orientation="h", y=1.08, x=0, xanchor="left"),
    )
    return fig


def tta_per_class_frame(
    tta: pd.DataFrame, class_names: list[str], metric: str = "accuracy", checkpoint: str | None = None
) -> pd.DataFrame:
    """Rows = classes, columns = TTA variants, values = per-class accuracy (or f1)."""
    if tta is None or tta.empty:
        return pd.DataFrame()
    rows = tta if checkpoint is None else tta[tta["checkpoint"] == checkpoint]
    cols = {}
    for _, r in rows.iterrows():
        values = (r["per_class"] or {}).get(metric)
        if values is not None:
            cols[r["variant"]] = [float(v) for v in values]
    if not cols:
        return pd.DataFrame()
    n = max(len(v) for v in cols.values())
    names = class_names_for(n, class_names)
    return pd.DataFrame(cols, index=pd.Index(names, name="class"))


# ------------------------------------------------------------------------------- galleries
def matching_predictions(
    predictions: dict, true_class: int | None, pred_class: int | None, limit: int = 48
) -> list[int]:
    """Indices (into the split) with this true and predicted class; wrong ones by confidence, right
    ones by lowest confidence first (the doubtful ones are the interesting ones)."""
    t = np.asarray(predictions.get("target", []))
    p = np.asarray(predictions.get("pred", []))
    conf = np.asarray(predictions.get("confidence", []), dtype=float)
    mask = np.ones(len(t), dtype=bool)
    if true_class is not None:
        mask &= t == true_class
    if pred_class is not None:
        mask &= p == pred_class
    idx = np.flatnonzero(mask)
    right = true_class is not None and true_class == pred_class
    order = np.argsort(conf[idx]) if right else np.argsort(-conf[idx])
    return [int(i) for i in idx[order][:limit]]


def top_loss_indices(predictions: dict, n: int = 24) -> list[int]:
    loss = np.asarray(predictions.get("loss", []), dtype=float)
    return [int(i) for i in np.argsort(-loss)[:n]]


def prediction_caption(predictions: dict, i: int, class_names: list[str], with_loss: bool = False) -> str:
    """An image tile's caption. st.image reads captions as markdown: the class names are escaped."""
    from dashboard.text import plain

    names = list(class_names)

    def name(k):
        return plain(names[k]) if 0 <= k < len(names) else str(k)

    t, p = int(predictions["target"][i]), int(predictions["pred"][i])
    c = float(predictions["confidence"][i])
    mark = "✓" if t == p else "✗"
    text = f"{mark} true {name(t)} → {name(p)} ({c:.0%})"
    if with_loss and "loss" in predictions:
        text += f", loss {float(predictions['loss'][i]):.2f}"
    return text


STRETCH_PERCENTILES = (1.0, 99.0)
STRETCH_LABEL = "Contrast stretch (display only)"
STRETCH_HELP = (
    "Shows each image rescaled so its 1st–99th percentile spans black to white: faint or sparse images "
    "(mostly black, as astronomy or medical scans) become visible. Only what is shown changes: training, "
    "the run's config and its augmentation never see it."
)


def contrast_stretch(img: np.ndarray, percentiles: tuple[float, float] = STRETCH_PERCENTILES) -> np.ndarray:
    """For display only: the image's low..high percentile rescaled to 0..255 (all channels together, so
    colours keep their balance). When the high percentile is still the black background (under 1 % of the
    pixels lit, a few stars) the brightest pixel is the top instead; a flat image comes back as it is."""
    a = np.asarray(img)
    if a.size == 0:
        return a
    lo, hi = (float(v) for v in np.percentile(a, percentiles))
    if hi <= lo:
        hi = float(a.max())
    if hi <= lo:
        return a
    out = (a.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).round().astype(np.uint8)


def stretch_toggle(where, key: str = "display_stretch") -> bool:
    """The display toggle for contrast stretch, drawn in `where` (st or a column); kept for the session."""
    return bool(where.toggle(STRETCH_LABEL, key=key, help=STRETCH_HELP, persist_state="session"))


def display_image(img: np.ndarray, px: int = 96, stretch: bool = False) -> np.ndarray:
    """uint8 HWC -> an image whose shorter side is at least `px`, enlarged by whole pixels (nearest
    neighbour: the pixels of 8x8 digits stay sharp squares); grey comes out as (H, W). With `stretch`, the
    image is contrast-stretched first (`contrast_stretch`): every gallery, sample grid and preview shows
    images through here, so the display toggle means the same everywhere."""
    a = np.asarray(img)
    if stretch:
        a = contrast_stretch(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    scale = max(1, math.ceil(px / max(1, min(a.shape[:2]))))
    if scale > 1:
        a = np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)
    return np.ascontiguousarray(a)


# ------------------------------------------------------------------------------- checkpoints
def checkpoints_frame(ckpts: list[dict]) -> pd.DataFrame:
    import os

    rows = []
    for c in ckpts:
        exists = bool(c["path"]) and os.path.isfile(c["path"])
        rows.append(
            {
                "checkpoint": checkpoint_label(c),
                "kind": c["kind"],
                "epoch": c["epoch"],
                "metric": f"{c['metric_name']} = {c['metric_value']:.4f}"
                if c.get("metric_name") and c.get("metric_value") is not None
                else "",
                "size_mb": os.path.getsize(c["path"]) / 1e6 if exists else None,
                "on disk": exists,
                "path": c["path"],
            }
        )
    return pd.DataFrame(rows)


def checkpoint_label(c: dict) -> str:
    """The name `python -m engine evaluate --checkpoint` takes: best, last or epoch_NNNN."""
    import os

    return os.path.splitext(os.path.basename(c["path"]))[0] if c["kind"] == "epoch" else c["kind"]


# ------------------------------------------------------------------------------- builder previews
def lr_preview(lrs: list[float]) -> go.Figure:
    """The learning rate each epoch would use (from engine.training.loop.lr_trajectory)."""
    x = list(range(1, len(lrs) + 1))
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=lrs,
            mode="lines+markers" if len(lrs) <= 60 else "lines",
            line=dict(color="#9467bd"),
            hovertemplate="epoch %{x}<br>lr %{y:.3g}<extra></extra>",
        )
    )
    top = 1.15 * max(lrs) if lrs and max(lrs) > 0 else 1.0
    fig.update_layout(
        height=220,
        margin=dict(l=10, r=10, t=30, b=10),
        title="Learning rate per epoch (preview)",
        xaxis_title="epoch",
        yaxis=dict(exponentformat="e", range=[0, top]),
    )
    return fig
