"""Figures and tables of the data-health, explanation and TTA cost panels (pure: frames and plotly figures)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.plots import class_names_for


# ------------------------------------------------------------------------------- TTA cost and benefit
def tta_cost_frame(tta: pd.DataFrame, class_names: list[str], checkpoint: str | None = None) -> pd.DataFrame:
    """One row per TTA variant of one checkpoint: time per image (ms), its cost relative to the plain
    prediction, the accuracy gain over it (points), and the gain of every class (points)."""
    if tta is None or tta.empty:
        return pd.DataFrame()
    rows = tta if checkpoint is None else tta[tta["checkpoint"] == checkpoint]
    rows = rows.drop_duplicates("variant", keep="last")
    base = rows[rows["variant"] == "none"]
    base_acc = float(base["accuracy"].iloc[0]) if len(base) else None
    base_pc = np.asarray((base["per_class"].iloc[0] or {}).get("accuracy", []), dtype=float) if len(base) else None
    seconds = rows.get("seconds_per_image", pd.Series([None] * len(rows), index=rows.index))
    base_s = seconds[rows["variant"] == "none"]
    base_s = float(base_s.iloc[0]) if len(base_s) and pd.notna(base_s.iloc[0]) else None
    out = []
    for (_, r), s in zip(rows.iterrows(), seconds):
        s = float(s) if s is not None and pd.notna(s) else None
        row = {
            "variant": r["variant"],
            "ms_per_image": None if s is None else 1000 * s,
            "cost_x": None if s is None or not base_s else s / base_s,
            "accuracy": float(r["accuracy"]),
            "gain_pp": None if base_acc is None else 100 * (float(r["accuracy"]) - base_acc),
        }
        pc = np.asarray((r["per_class"] or {}).get("accuracy", []), dtype=float)
        names = class_names_for(len(pc), class_names)
        for k, name in enumerate(names):
            ok = base_pc is not None and k < len(base_pc)
            row[f"gain {name}"] = 100 * (pc[k] - base_pc[k]) if ok else None
        out.append(row)
    return pd.DataFrame(out)


def tta_cost_figure(frame: pd.DataFrame) -> go.Figure:
    """Accuracy gain (points over the plain prediction) against time per image: one large marker per
    variant (the whole test set), small ones for each class's gain."""
    fig = go.Figure()
    if frame is None or frame.empty:
        return fig
    timed = frame.dropna(subset=["ms_per_image"])
    class_cols = [c for c in frame.columns if c.startswith("gain ")]
    for _, r in timed.iterrows():
        vals = [r[c] for c in class_cols if r[c] is not None and pd.notna(r[c])]
        fig.add_scatter(
            x=[r["ms_per_image"]] * len(vals),
            y=vals,
            mode="markers",
            marker=dict(size=6, opacity=0.35),
            name=f"{r['variant']} per class",
            text=[c.removeprefix("gain ") for c in class_cols if r[c] is not None and pd.notna(r[c])],
            hovertemplate=f"{r['variant']}, class %{{text}}: %{{y:+.2f}} pp<extra></extra>",
            showlegend=False,
        )
    fig.add_scatter(
        x=timed["ms_per_image"],
        y=timed["gain_pp"].fillna(0),
        mode="markers+text",
        text=timed["variant"],
        textposition="top center",
        marker=dict(size=14, symbol="diamond"),
        name="whole test set",
        customdata=timed["cost_x"].fillna(np.nan),
        hovertemplate="%{text}: %{y:+.2f} pp at %{x:.3f} ms/image (%{customdata:.1f}× none)<extra></extra>",
    )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(
        height=360,
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis=dict(title="wall time per image (ms, all views)", rangemode="tozero"),
        yaxis=dict(title="accuracy gain over none (pp)"),
    )
    return fig


# ------------------------------------------------------------------------------- imbalance
def imbalance_figure(report: dict) -> go.Figure:
    fig = go.Figure()
    fig.add_bar(x=report["class_names"], y=report["counts"], name="images", marker_color="#4c78a8")
    fig.add_scatter(
        x=report["class_names"],
        y=report["weights"],
        yaxis="y2",
        mode="lines+markers",
        name="inverse-frequency weight",
        marker_color="#f58518",
    )
    fig.update_layout(
        height=300,
        margin=dict(l=10, r=10, t=10, b=10),
        yaxis=dict(title="training images"),
        yaxis2=dict(title="weight", overlaying="y", side="right", rangemode="tozero"),
        legend=dict(orientation="h", y=1.1, x=0),
    )
    return fig


# ------------------------------------------------------------------------------- embeddings
def embedding_figure(emb: dict, color_by: str = "target") -> go.Figure:
    """The 2-D embedding, one trace per class (coloured by true or predicted class); each point carries
    its index in the split as customdata, so a click names the image."""
    names = list(emb["meta"]["class_names"])
    coords, labels = emb["coords"], emb[color_by]
    wrong = emb["target"] != emb["pred"]
    fig = go.Figure()
    for k in np.unique(labels):
        m = labels == k
        fig.add_scattergl(
            x=coords[m, 0],
            y=coords[m, 1],
            mode="markers",
            name=names[k] if k < len(names) else str(k),
            customdata=np.stack([emb["index"][m], emb["target"][m], emb["pred"][m]], axis=1),
            marker=dict(size=6, symbol=np.where(wrong[m], "x", "circle"), opacity=0.8),
            hovertemplate="image %{customdata[0]}: true %{customdata[1]} → predicted %{customdata[2]}<extra></extra>",
        )
    fig.update_layout(
        height=460,
        margin=dict(l=10, r=10, t=10, b=10),
        legend=dict(title="true class" if color_by == "target" else "predicted class"),
        xaxis=dict(showticklabels=False, title=""),
        yaxis=dict(showticklabels=False, title=""),
        dragmode="pan",
    )
    return fig


def selected_index(selection) -> int | None:
    """The split index of the clicked embedding point (the browser sends customdata as a list or a mapping)."""
    for p in (selection or {}).get("points") or []:
        cd = p.get("customdata")
        if isinstance(cd, dict) and "0" in cd:
            return int(cd["0"])
        if isinstance(cd, (list, tuple)) and cd:
            return int(cd[0])
    return None
