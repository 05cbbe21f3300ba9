"""Figures and tables of a study: grouped summary, main effects, interaction heatmap, parallel
coordinates, parameter importance, and seed-averaged learning curves (mean ± std bands)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from control import study_stats

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def params_label(params: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in params.items())


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)}, {alpha})"


def summary_table(summary: list[dict], factors: list[str]) -> pd.DataFrame:
    rows = [
        {
            "#": i,
            **{f: _fmt(g["params"].get(f)) for f in factors},
            "n": g["n"],
            "mean": g["mean"],
            "std": g["std"],
            "95% CI low": g["ci_low"],
            "95% CI high": g["ci_high"],
            "runs": ", ".join(str(r) for r in g.get("run_ids", [])),
        }
        for i, g in enumerate(summary)
    ]
    return pd.DataFrame(rows)


def trials_table(trials: list[dict], factors: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": t["run_id"],
                "trial": t["trial"],
                **{f: _fmt(t["params"].get(f)) for f in factors},
                "seed": t["seed"],
                "status": t["status"],
                "epochs": f"{t['epochs_done']}/{t['epochs_planned']}",
                "objective": t["objective"],
            }
            for t in trials
        ]
    )


def _rows(trials: list[dict]) -> list[tuple[dict, float]]:
    return [(t["params"], t["objective"]) for t in trials if t["objective"] is not None]


def main_effect_figure(trials: list[dict], factor: str, metric: str) -> go.Figure:
    effects = study_stats.main_effects(_rows(trials), factor)
    x = [_fmt(e["level"]) for e in effects]
    means = [e["mean"] for e in effects]
    up = [0 if math.isnan(e["ci_high"]) else e["ci_high"] - e["mean"] for e in effects]
    down = [0 if math.isnan(e["ci_low"]) else e["mean"] - e["ci_low"] for e in effects]
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=means,
            mode="lines+markers",
            error_y=dict(type="data", array=up, arrayminus=down, visible=True),
            text=[f"n={e['n']}" for e in effects],
            hovertemplate="%{x}: %{y:.4f} (%{text})<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Main effect of {factor}", xaxis_title=factor, yaxis_title=f"{metric} (mean, 95% CI)", height=320
    )
    fig.update_xaxes(type="category")
    return fig


def interaction_figure(trials: list[dict], a: str, b: str, metric: str) -> go.Figure:
    la, lb, matrix = study_stats.interaction_table(_rows(trials), a, b)
    text = [["" if math.isnan(v) else f"{v:.4f}" for v in row] for row in matrix]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=[_fmt(v) for v in lb],
            y=[_fmt(v) for v in la],
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar=dict(title=metric),
        )
    )
    fig.update_layout(title=f"{a} × {b} (mean {metric})", xaxis_title=b, yaxis_title=a, height=360)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def parallel_coordinates_figure(trials: list[dict], factors: list[str], metric: str) -> go.Figure:
    done = [t for t in trials if t["objective"] is not None]
    dims = []
    for f in factors:
        values = [t["params"].get(f) for t in done]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            dims.append(dict(label=f, values=values))
        else:
            levels = sorted({_fmt(v) for v in values})
            dims.append(
                dict(
                    label=f,
                    values=[levels.index(_fmt(v)) for v in values],
                    tickvals=list(range(len(levels))),
                    ticktext=levels,
                )
            )
    objective = [t["objective"] for t in done]
    dims.append(dict(label=metric, values=objective))
    fig = go.Figure(go.Parcoords(line=dict(color=objective, colorscale="Viridis", showscale=True), dimensions=dims))
    # room on both sides: parcoords draws the first and last axes' tick labels outside the plot area
    fig.update_layout(title="Every finished run", height=380, margin=dict(l=80, r=80, t=80, b=40))
    return fig


def importance_figure(importance: dict[str, float]) -> go.Figure:
    names = list(importance)[::-1]
    fig = go.Figure(go.Bar(x=[importance[n] for n in names], y=names, orientation="h"))
    fig.update_layout(
        title="Parameter importance (fANOVA)",
        xaxis_title="share of the objective's variance",
        height=max(200, 60 * len(names) + 100),
    )
    return fig


def seed_bands(history: pd.DataFrame, trials: list[dict], split: str | None = None, name: str | None = None):
    """Per configuration and epoch: mean, std and n over its seeds of one metric (long table). `history`
    is (run_id, epoch, value) of that metric, or a long metric history filtered here by split and name."""
    h = history if split is None else history[(history["split"] == split) & (history["name"] == name)]
    if h.empty:
        return pd.DataFrame(columns=["config", "epoch", "mean", "std", "n"])
    label = {t["run_id"]: params_label(t["params"]) for t in trials}
    h = h.assign(config=h["run_id"].map(label)).dropna(subset=["config"])
    out = h.groupby(["config", "epoch"])["value"].agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def seed_bands_figure(bands: pd.DataFrame, metric_label: str) -> go.Figure:
    fig = go.Figure()
    for i, (config, g) in enumerate(bands.groupby("config", sort=False)):
        color = PALETTE[i % len(PALETTE)]
        x = g["epoch"].to_numpy()
        mean, std = g["mean"].to_numpy(), g["std"].to_numpy()
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([x, x[::-1]]),
                y=np.concatenate([mean + std, (mean - std)[::-1]]),
                fill="toself",
                fillcolor=_rgba(color, 0.18),
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
                legendgroup=config,
            )
        )
        fig.add_trace(
            go.Scatter(x=x, y=mean, mode="lines+markers", name=config, line=dict(color=color), legendgroup=config)
        )
    fig.update_layout(
        title=f"{metric_label}: mean ± std over seeds", xaxis_title="epoch", yaxis_title=metric_label, height=380
    )
    return fig


def progress_counts(counts: dict, planned: int) -> tuple[float, str]:
    ended = sum(counts.get(k, 0) for k in ("done", "pruned", "failed", "lost"))
    parts = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    return (ended / planned if planned else 0.0), f"{ended} of {planned} runs ended ({parts or 'none yet'})"
