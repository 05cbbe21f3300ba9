"""Per-image history panels (not a page of its own): the validation confusion matrix at any epoch with
its cells' images, the images most often forgotten and never learned, the epoch each image was first
learned, and, on Compare, the images one run gets right and the other wrong.

Everything comes from the per-image predictions the engine stores every epoch (db.queries
prediction_history) and the run's split, rebuilt from its data config (dashboard.reads.splits): the
stored order is the split's order, and the targets are the split's labels. Before any image is shown the
stored predictions are checked against the epoch's stored confusion matrix, so a dataset changed on disk
since the run shows a warning instead of wrong images."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from control import explain_jobs, studies
from dashboard import plots, reads
from dashboard.confusion_picker import confusion_picker
from dashboard.text import plain
from dashboard.views import explain_panel
from db import queries
from engine import image_history as ih

GALLERY_LIMIT = 48
ss = st.session_state


# ------------------------------------------------------------------------------- cached reads
@st.cache_data(max_entries=16, show_spinner=False)
def _history(url: str, run_id: int, split: str, epochs_done: int, status: str):
    """The run's per-image history, re-read only when an epoch finishes or the status changes."""
    return queries.prediction_history(url, run_id, split)


def history_of(url: str, run_id: int, epochs_done: int, status: str):
    return _history(url, run_id, "val", epochs_done, status)


def _val_targets(url: str, data_json: str, history, matrices: dict[int, list]):
    """(val images, val targets) lined up with the stored history, or (None, reason)."""
    sp, err = reads.splits(url, data_json)
    if sp is None:
        return None, f"the images cannot be shown: {err}"
    if history is None:
        return None, "this run stored no per-image validation predictions"
    if len(sp.val_y) != history.n:
        return None, f"the dataset on disk has {len(sp.val_y)} validation images, the run stored {history.n}"
    for epoch in history.epochs[-1:]:  # the stored matrix of the newest epoch must be the stored predictions'
        m = matrices.get(epoch)
        if m is not None and not np.array_equal(
            ih.confusion(history.pred[history.row(epoch)], sp.val_y, len(m)), np.asarray(m)
        ):
            return None, "the dataset on disk no longer matches this run's validation split"
    return sp, None


def epoch_predictions(history, sp, epoch: int) -> dict:
    """One epoch's predictions in the gallery helpers' shape ({target, pred, confidence})."""
    r = history.row(epoch)
    return {
        "target": np.asarray(sp.val_y),
        "pred": history.pred[r].astype(int),
        "confidence": history.confidence[r].astype(float),
    }


def gallery(images, idx, captions, empty: str = "No images.") -> None:
    if not len(idx):
        st.caption(empty)
        return
    stretch = bool(st.session_state.get("detail_stretch"))  # the Run detail page's display toggle
    st.image([plots.display_image(images[i], stretch=stretch) for i in idx], caption=captions, width=96)


# ------------------------------------------------------------------------------- Run detail
def val_confusion(
    url: str, run_id: int, data_json: str, epoch: int, matrices: dict[int, list], names, normalise: bool, row: dict
) -> None:
    """The validation confusion matrix of `epoch`, clickable: a cell opens its validation images at that
    epoch (true and predicted class also by two pickers)."""
    matrix = matrices[epoch]
    keys = (f"detail_val_true_{run_id}", f"detail_val_pred_{run_id}", f"detail_cm_{run_id}")
    right, true_c, pred_c = confusion_picker(
        matrix,
        names,
        title=f"Validation confusion, epoch {epoch}",
        caption="Click a cell to see its validation images at this epoch.",
        keys=keys,
        normalise=normalise,
    )
    with right:
        history = history_of(url, run_id, row["epochs_done"], row["status"])
        sp, why = _val_targets(url, data_json, history, matrices)
        if sp is None:
            st.info(plain(why))
            return
        if epoch not in history.epochs:
            st.info(f"No per-image predictions were stored for epoch {epoch}.")
            return
        preds = epoch_predictions(history, sp, epoch)
        idx = plots.matching_predictions(preds, true_c, pred_c, limit=GALLERY_LIMIT)
        total = len(ih.confusion_cell(preds["pred"], preds["target"], true_c, pred_c))
        st.caption(
            f"{total} validation image(s) at epoch {epoch}"
            + (f", first {GALLERY_LIMIT} shown" if total > GALLERY_LIMIT else "")
            + " — wrong predictions by confidence, right ones least confident first"
        )
        gallery(sp.val_x, idx, [plots.prediction_caption(preds, i, names) for i in idx], "No image in this cell.")
        if len(idx):
            ck, exact = _checkpoint_of_epoch(url, run_id, epoch, history.epochs[-1])
            if not exact:
                st.caption(f"Epoch {epoch}'s weights were not kept: Grad-CAM shows the {ck} checkpoint's model.")
            explain_panel.gallery_gradcam(
                url, run_id, ck, "val", idx, sp.val_x, names, f"detail_cell_cam_{run_id}", row.get("run_dir")
            )


def _checkpoint_of_epoch(url: str, run_id: int, epoch: int, last_epoch: int) -> tuple[str, bool]:
    """(checkpoint, whether it holds epoch `epoch`'s weights): the epoch's snapshot when it was kept, else
    the last checkpoint (that epoch's weights when `epoch` is the last), else the best."""
    kept = explain_jobs.checkpoint_paths(url, run_id)
    if f"epoch_{epoch:04d}" in kept:
        return f"epoch_{epoch:04d}", True
    return ("last", epoch == last_epoch) if "last" in kept else ("best", False)


def first_learned_figure(first: np.ndarray, epochs: list[int]) -> go.Figure:
    """Bars: how many images were first predicted right at each epoch, and how many never were."""
    counts = [int((first == e).sum()) for e in epochs]
    never = int((first == ih.NEVER).sum())
    x = [str(e) for e in epochs] + ["never"]
    fig = go.Figure(
        go.Bar(
            x=x,
            y=counts + [never],
            marker_color=["#4c78a8"] * len(epochs) + ["#e45756"],
            hovertemplate="%{x}: %{y} images<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="epoch first learned", type="category")
    fig.update_yaxes(title_text="validation images")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), title="When each image was first learned")
    return fig


def history_panel(url: str, run_id: int, data_json: str, matrices: dict[int, list], names, row: dict) -> None:
    """Hard and forgotten images, never-learned images and the first-learned histogram."""
    st.markdown("#### Per-image history (validation)")
    history = history_of(url, run_id, row["epochs_done"], row["status"])
    if history is None:
        st.info("This run stored no per-image validation predictions (runs trained before they were kept).")
        return
    sp, why = _val_targets(url, data_json, history, matrices)
    if sp is None:
        st.info(plain(why))
        return
    s = ih.summary(history, sp.val_y, GALLERY_LIMIT)
    last = epoch_predictions(history, sp, history.epochs[-1])
    m = st.columns(4)
    m[0].metric("Validation images", f"{history.n:,}", help=f"over {len(history.epochs)} epoch(s)")
    m[1].metric("Forgotten at least once", f"{s['forgotten_once']:,}", help="right at one epoch, wrong at the next")
    m[2].metric("Never learned", f"{len(s['never']):,}", help="wrong at every epoch")
    m[3].metric("Right at the last epoch", f"{int(s['correct'][-1].sum()):,}")
    st.plotly_chart(first_learned_figure(s["first_learned"], history.epochs), key=f"detail_first_learned_{run_id}")

    def caption(i):
        fl = s["first_learned"][i]
        return (
            f"#{i} · forgotten {s['forgetting'][i]}×, {s['flips'][i]} flips · "
            + (f"first right at {fl}" if fl != ih.NEVER else "never right")
            + " · now "
            + plots.prediction_caption(last, i, names)
        )

    # Grad-CAM of a gallery: the last checkpoint, whose predictions the captions' "now" are
    ck = "last" if "last" in explain_jobs.checkpoint_paths(url, run_id) else "best"
    st.markdown("**Hard and forgotten** — most forgetting events first (right at one epoch, wrong at the next)")
    gallery(sp.val_x, s["hard"], [caption(i) for i in s["hard"]], "No image was forgotten: none went right → wrong.")
    explain_panel.gallery_gradcam(
        url, run_id, ck, "val", s["hard"], sp.val_x, names, f"detail_hard_cam_{run_id}", row.get("run_dir")
    )
    never = s["never"][np.argsort(-last["confidence"][s["never"]], kind="stable")][:GALLERY_LIMIT]
    st.markdown(
        f"**Never learned** — wrong at every epoch ({len(s['never'])}"
        + (f", the {GALLERY_LIMIT} most confident shown)" if len(s["never"]) > GALLERY_LIMIT else ")")
    )
    gallery(sp.val_x, never, [caption(i) for i in never], "Every image was right at some epoch.")
    explain_panel.gallery_gradcam(
        url, run_id, ck, "val", never, sp.val_x, names, f"detail_never_cam_{run_id}", row.get("run_dir")
    )


# ------------------------------------------------------------------------------- Compare
def discordant_test(url: str, run_a: int, run_b: int) -> dict:
    """The test images right only in A and right only in B, with McNemar's result on the very same
    correctness vectors (control.studies.compare_runs): its only_a / only_b are the galleries' counts."""
    result = studies.compare_runs(url, run_a, run_b)
    pa, pb = queries.final_test_predictions(url, run_a), queries.final_test_predictions(url, run_b)
    target = np.asarray(pa["target"])
    only_a, only_b = ih.discordant(np.asarray(pa["pred"]) == target, np.asarray(pb["pred"]) == target)
    return {**result, "idx_a": only_a, "idx_b": only_b, "pred_a": pa, "pred_b": pb}


def discordant_val(history_a, history_b, targets, epoch_a: int, epoch_b: int) -> dict:
    """The same on the validation split, at one epoch of each run, from the per-image histories."""
    ca = history_a.correct(targets)[history_a.row(epoch_a)]
    cb = history_b.correct(targets)[history_b.row(epoch_b)]
    from control import study_stats  # scipy: only where a test is drawn

    result = study_stats.mcnemar_exact(ca, cb)
    only_a, only_b = ih.discordant(ca, cb)
    return {**result, "idx_a": only_a, "idx_b": only_b}


def ab_tab(url: str, runs: list[dict], labels: dict[int, str]) -> None:
    """Compare page: the images one run gets right and the other wrong, with their counts."""
    ids = [r["id"] for r in runs]
    by_id = {r["id"]: r for r in runs}
    c = st.columns([2, 2, 3])
    a = c[0].selectbox("Run A", ids, index=0, format_func=labels.get, key="compare_ab_a")
    b = c[1].selectbox("Run B", ids, index=min(1, len(ids) - 1), format_func=labels.get, key="compare_ab_b")
    source = c[2].radio(
        "Images from",
        ["test", "val"],
        horizontal=True,
        key="compare_ab_source",
        format_func={"test": "test: latest evaluation (McNemar's set)", "val": "val: last epoch"}.get,
    )
    if a == b:
        st.info("Pick two different runs.")
        return
    data_a = by_id[a]["config"].get("data", {})
    sp, err = reads.splits(url, json.dumps(data_a))
    if source == "test":
        try:
            res = discordant_test(url, a, b)
        except ValueError as exc:
            st.warning(plain(exc))
            return
        ok = sp is not None and np.array_equal(np.asarray(res["pred_a"]["target"]), sp.test_y)
        images, preds_a, preds_b = (sp.test_x if ok else None), res["pred_a"], res["pred_b"]
    else:
        # cached by how many epochs each run has stored so far (a live run keeps adding them)
        ha = history_of(url, a, len(queries.prediction_epochs(url, a)), by_id[a]["status"])
        hb = history_of(url, b, len(queries.prediction_epochs(url, b)), by_id[b]["status"])
        if ha is None or hb is None:
            st.info("Both runs need stored per-image validation predictions.")
            return
        sp_b, _ = reads.splits(url, json.dumps(by_id[b]["config"].get("data", {})))
        if sp is None or sp_b is None or not _same_split(sp.val_x, sp.val_y, sp_b.val_x, sp_b.val_y, ha.n, hb.n):
            st.warning("The two runs were not validated on the same images.")
            return
        res = discordant_val(ha, hb, sp.val_y, ha.epochs[-1], hb.epochs[-1])
        images, ok = sp.val_x, True
        preds_a = epoch_predictions(ha, sp, ha.epochs[-1])
        preds_b = epoch_predictions(hb, sp, hb.epochs[-1])
    from control import study_stats

    st.caption(plain(study_stats.verdict(res, f"run {a}", f"run {b}")))
    m = st.columns(3)
    m[0].metric("Right in A, wrong in B", res["only_a"], help="McNemar's b")
    m[1].metric("Right in B, wrong in A", res["only_b"], help="McNemar's c")
    m[2].metric("p (exact McNemar)", f"{res['p']:.3g}")
    if not ok:
        st.warning(f"The images cannot be shown: {plain(err or 'the dataset on disk no longer matches')}")
        return
    names = reads.class_names(url, json.dumps(data_a), 0)

    def cap(i, mine, other):
        return plots.prediction_caption(mine, i, names) + " · other: " + plots.prediction_caption(other, i, names)

    for title, idx, mine, other in (
        (f"Right in A (run {a}), wrong in B (run {b})", res["idx_a"], preds_a, preds_b),
        (f"Right in B (run {b}), wrong in A (run {a})", res["idx_b"], preds_b, preds_a),
    ):
        st.markdown(
            f"**{title}** — {len(idx)}" + (f", first {GALLERY_LIMIT} shown" if len(idx) > GALLERY_LIMIT else "")
        )
        shown = idx[:GALLERY_LIMIT]
        gallery(images, shown, [cap(i, mine, other) for i in shown], "None.")


def _same_split(xa, ya, xb, yb, na: int, nb: int) -> bool:
    return na == nb == len(ya) == len(yb) and np.array_equal(ya, yb) and np.array_equal(xa, xb)
