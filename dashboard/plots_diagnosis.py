"""Figures that read a run: best-epoch and overfitting-onset marks on learning curves (engine.diagnose's
rules), the LR range test's loss-against-LR plot, and the reliability diagram (engine.training.calibration).

Pure functions over plain data (wide per-epoch frames, result dicts, prediction arrays); no Streamlit, no DB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

BEST_COLOR, ONSET_COLOR = "#2ca02c", "#d62728"
METRIC_WORDS = {
    "val_acc": "val accuracy",
    "val_loss": "val loss",
    "train_acc": "train accuracy",
    "train_loss": "train loss",
}


# ------------------------------------------------------------------------------- curves that read themselves
def _column(wide: pd.DataFrame, name: str) -> list[float]:
    return [float(v) for v in wide[name]] if name in wide else []


def curve_reading(wide: pd.DataFrame, best_metric: str = "val_acc") -> dict:
    """What one run's curves say, from its wide per-epoch frame (columns epoch, train_loss, val_loss,
    val_acc, ...): {"best_epoch", "best_metric", "diagnosis" (engine.diagnose.Diagnosis or None),
    "epochs"}. engine.diagnose's rules see the epochs that have both a train and a val loss; epochs here are
    the run's own (1-based) numbers."""
    from engine.diagnose import Diagnosis, best_epoch, diagnose

    if wide.empty or "epoch" not in wide:
        return {"best_epoch": None, "best_metric": best_metric, "diagnosis": None, "epochs": 0}
    if best_metric not in wide:
        best_metric = next((m for m in ("val_acc", "val_loss") if m in wide), best_metric)
    values = wide.dropna(subset=[best_metric]) if best_metric in wide else wide.iloc[:0]
    i = best_epoch(_column(values, best_metric), best_metric)
    diagnosis = None
    if "train_loss" in wide:
        both = wide.dropna(subset=["train_loss", "val_loss"] if "val_loss" in wide else ["train_loss"])
        if len(both):
            d = diagnose(_column(both, "train_loss"), _column(both, "val_loss"))
            if d.onset is not None:  # the rule counts the epochs it saw; name the run's own epoch
                onset = int(both["epoch"].iloc[d.onset - 1])
                d = Diagnosis(f"overfitting since epoch {onset}", onset)
            diagnosis = d
    return {
        "best_epoch": int(values["epoch"].iloc[i - 1]) if i is not None else None,
        "best_metric": best_metric,
        "diagnosis": diagnosis,
        "epochs": len(wide),
    }


def reading_line(reading: dict, min_epochs: int = 4) -> str:
    """The one line shown beside a run's curves: its best epoch and its diagnosis."""
    from engine.diagnose import HEALTHY, LR_TOO_HIGH, UNDERFITTING, UNSTABLE

    parts = []
    if reading["best_epoch"] is not None:
        metric = METRIC_WORDS.get(reading["best_metric"], reading["best_metric"])
        parts.append(f"Best {metric} at epoch {reading['best_epoch']}")
    d = reading["diagnosis"]
    if d is not None:
        if d.onset is not None:
            parts.append(f"📈 {d.label} (val loss rising, or the gap to train loss widening, as train loss falls)")
        elif d.label == HEALTHY:
            enough = reading["epochs"] >= min_epochs
            parts.append("✅ healthy curves" if enough else "too few epochs to read the curves yet")
        else:
            icon = {LR_TOO_HIGH: "💥", UNSTABLE: "〰️", UNDERFITTING: "🐢"}.get(d.label, "⚠️")
            parts.append(f"{icon} {d.label}")
    return " · ".join(parts)


def mark_reading(fig: go.Figure, reading: dict, panels=((1, 1), (1, 2))) -> None:
    """Vertical lines at the best epoch and at the overfitting onset on the given subplot panels, each
    with its label (top of the first panel, bottom of the others). Written as one layout update: plotly's
    add_vline per panel re-validates the whole layout each call, a quarter of a Run detail rerun."""
    best, d = reading["best_epoch"], reading["diagnosis"]
    marks = []  # (x, colour, dash, text, the side of the line the label sits on)
    onset = d.onset if d is not None else None
    # the earlier line's label on its left, the later one's on its right: two close lines never overlap
    best_side = "right" if onset is not None and best is not None and onset < best else "left"
    if best is not None:
        marks.append((best, BEST_COLOR, "dash", f"best: epoch {best}", best_side))
    if onset is not None:
        marks.append(
            (onset, ONSET_COLOR, "dot", f"overfitting from epoch {onset}", "left" if best_side == "right" else "right")
        )
    if not marks:
        return
    shapes, notes = list(fig.layout.shapes), list(fig.layout.annotations)
    for k, (row, col) in enumerate(panels):
        sub = fig.get_subplot(row, col)
        xref = sub.xaxis.plotly_name.replace("axis", "")  # "xaxis2" -> "x2"
        ydomain = sub.yaxis.plotly_name.replace("axis", "") + " domain"
        top = k == 0
        for x, color, dash, text, side in marks:
            shapes.append(
                dict(
                    type="line",
                    xref=xref,
                    x0=x,
                    x1=x,
                    yref=ydomain,
                    y0=0,
                    y1=1,
                    line=dict(color=color, dash=dash, width=1.5),
                )
            )
            notes.append(
                dict(
                    text=text,
                    font=dict(color=color, size=11),
                    showarrow=False,
                    xref=xref,
                    x=x,
                    xanchor="right" if side == "left" else "left",
                    yref=ydomain,
                    y=1 if top else 0,
                    yanchor="top" if top else "bottom",
                )
            )
    fig.update_layout(shapes=shapes, annotations=notes)


def run_wide(history: pd.DataFrame, run_id: int) -> pd.DataFrame:
    """One run's rows of a long (run_id, epoch, split, name, value) history as a wide per-epoch frame."""
    h = history[history["run_id"] == run_id]
    if h.empty:
        return pd.DataFrame()
    wide = h.assign(col=h["split"] + "_" + h["name"]).pivot_table(
        index="epoch", columns="col", values="value", aggfunc="last"
    )
    return wide.reset_index().sort_values("epoch")


def compare_readings(history: pd.DataFrame, labels: Mapping[int, str], best_metric: str = "val_acc") -> dict:
    """{run id: curve_reading} for every run of a Compare history."""
    return {run_id: curve_reading(run_wide(history, run_id), best_metric) for run_id in labels}


def mark_compare(fig: go.Figure, labels: Mapping[int, str], readings: dict, log_y: bool = False) -> go.Figure:
    """On a Compare curves figure: per run, a ★ on its best epoch and a ✕ at its overfitting onset, placed on
    the run's val trace (else its first trace) as annotations, so the figure's traces stay one per
    (run, split); hovering a mark names the run and its diagnosis."""
    by_name = {t.name: t for t in fig.data}
    for run_id, label in labels.items():
        r = readings.get(run_id)
        trace = by_name.get(f"{label} · val") or next((t for t in fig.data if t.legendgroup == label), None)
        if r is None or trace is None or trace.x is None:
            continue
        xs, ys = [int(x) for x in trace.x], list(trace.y)
        onset = r["diagnosis"].onset if r["diagnosis"] else None
        best_what = f"best {METRIC_WORDS.get(r['best_metric'], r['best_metric'])}"
        for epoch, mark, color, what in (
            (r["best_epoch"], "★", BEST_COLOR, best_what),
            (onset, "✕", ONSET_COLOR, "overfitting onset"),
        ):
            if epoch is None or epoch not in xs:
                continue
            y = float(ys[xs.index(epoch)])
            fig.add_annotation(
                x=epoch,
                y=math.log10(y) if log_y and y > 0 else y,  # a log axis places annotations by exponent
                text=mark,
                showarrow=False,
                font=dict(color=color, size=18),
                hovertext=f"{label}: {what}, epoch {epoch} · {r['diagnosis'] or ''}",
                name=f"{label} · {what}",
            )
    return fig


# ------------------------------------------------------------------------------- LR range test
LR_RULES = {
    "valley": "two thirds down the longest falling stretch of the smoothed loss (fastai's valley)",
    "steepest": "where the smoothed loss falls fastest per decade of LR, before its minimum",
}


def lr_find_figure(result: dict, suggested_lr: float | None, rule: str | None, current_lr: float | None = None):
    """Loss against LR on a log axis (raw steps faint, smoothed bold), the suggestion marked with its rule,
    the other rule's pick dashed and the form's current LR dotted."""
    lrs = result.get("lrs") or []
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=lrs,
            y=result.get("losses") or [],
            mode="markers",
            name="loss per step",
            marker=dict(color="#9ecae1", size=4),
            hovertemplate="lr %{x:.3g}<br>loss %{y:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=lrs,
            y=result.get("smoothed") or [],
            mode="lines",
            name="smoothed loss",
            line=dict(color="#1f77b4", width=2.5),
            hovertemplate="lr %{x:.3g}<br>smoothed loss %{y:.4f}<extra></extra>",
        )
    )
    # Lines as shapes, their labels as annotations placed by hand: on a log axis an annotation's x is the
    # exponent (log10), which add_vline's own annotation does not convert.
    marks = [(suggested_lr, f"suggested {suggested_lr:.3g} ({rule})", BEST_COLOR, "solid", 1.0)] if suggested_lr else []
    marks += [
        (lr, f"{other}: {lr:.3g}", "#7f7f7f", "dash", 0.9)
        for other, lr in (result.get("suggestions") or {}).items()
        if other != rule and lr
    ]
    if current_lr:
        marks.append((current_lr, f"form: {current_lr:.3g}", "#9467bd", "dot", 0.8))
    for lr, text, color, dash, y in marks:
        fig.add_vline(x=lr, line=dict(color=color, dash=dash, width=2 if dash == "solid" else 1))
        fig.add_annotation(
            x=math.log10(lr),
            y=y,
            xref="x",
            yref="paper",
            text=text,
            showarrow=False,
            xanchor="left",
            font=dict(color=color, size=12 if dash == "solid" else 11),
            bgcolor="rgba(255,255,255,0.7)",
        )
    smoothed = [v for v in (result.get("smoothed") or []) if v is not None and math.isfinite(v)]
    raw = [v for v in (result.get("losses") or []) if v is not None and math.isfinite(v)]
    yaxis = dict(title="training loss")
    if smoothed:  # a diverging tail must not flatten the part that matters
        lo, top = min(smoothed + raw), max([smoothed[0]] + raw[:5])
        span = (top - lo) or abs(top) or 1.0
        yaxis["range"] = [lo - 0.08 * span, top + 0.3 * span]
    fig.update_layout(
        height=340,
        margin=dict(l=10, r=10, t=40, b=10),
        title="LR range test: loss against learning rate",
        xaxis=dict(title="learning rate", type="log", exponentformat="e"),
        yaxis=yaxis,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"),
        hovermode="closest",
    )
    return fig


# ------------------------------------------------------------------------------- calibration
def stored_calibration(predictions: dict, n_bins: int = 15) -> dict | None:
    """Reliability bins and ECE (engine.training.calibration) of a stored evaluation's per-image
    predictions (target, pred, confidence); None when it kept none."""
    from engine.training.calibration import confidence_bins, ece_of_bins

    if not predictions or not predictions.get("confidence"):
        return None
    conf = np.asarray(predictions["confidence"], dtype=np.float64)
    correct = np.asarray(predictions["pred"]) == np.asarray(predictions["target"])
    bins = confidence_bins(conf, correct, n_bins)
    return {
        "bins": bins,
        "ece": ece_of_bins(bins),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(conf.mean()),
        "n": int(len(conf)),
    }


def reliability_figure(bins: list[dict], title: str = "Reliability diagram", after: list[dict] | None = None):
    """Accuracy per confidence bin against the diagonal of perfect calibration; the bins' image counts on a
    second axis; `after`: the same bins after temperature scaling, beside them."""
    mids = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = (bins[0]["upper"] - bins[0]["lower"]) if bins else 0.1
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=mids,
            y=[b["count"] for b in bins],
            width=width * 0.95,
            name="images per bin",
            marker=dict(color="rgba(127,127,127,0.18)"),
            yaxis="y2",
            hovertemplate="confidence %{x:.2f}<br>%{y} images<extra></extra>",
        )
    )
    for series, name, color in ((bins, "accuracy", "#1f77b4"), (after, "after temperature scaling", "#ff7f0e")):
        if not series:
            continue
        kept = [b for b in series if b["count"]]
        fig.add_trace(
            go.Scatter(
                x=[b["confidence"] for b in kept],
                y=[b["accuracy"] for b in kept],
                mode="lines+markers",
                name=name,
                line=dict(color=color),
                customdata=[b["count"] for b in kept],
                hovertemplate="mean confidence %{x:.3f}<br>accuracy %{y:.3f}<br>%{customdata} images<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line=dict(color="#7f7f7f", dash="dash")
        )
    )
    fig.update_layout(
        height=380,
        margin=dict(l=10, r=10, t=40, b=10),
        title=title,
        xaxis=dict(title="confidence (top-1 probability)", range=[0, 1]),
        yaxis=dict(title="accuracy", range=[0, 1.02]),
        yaxis2=dict(title="images", overlaying="y", side="right", showgrid=False, rangemode="tozero"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"),
        hovermode="closest",
    )
    return fig
