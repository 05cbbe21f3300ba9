"""Run detail's explanations: Grad-CAM maps for the predicted and the true class of the highest-loss
test images, and the embedding view (penultimate features in 2-D, PCA or UMAP; click a point to see
its image). `gallery_gradcam` puts "Explain these with Grad-CAM" under any gallery of a split's images
(test errors, hard and forgotten validation images, label-noise suspects) and shows their maps.

Not a page of its own: run_detail.py calls `render`. The model is never built here: the arrays come
from `python -m engine explain`, started in the background through control.explain_jobs and cached
in the run's folder, so a second view is a file read."""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from control import explain_jobs
from dashboard import plots, reads
from dashboard import plots_explain as px
from dashboard.text import plain


@st.fragment(run_every=1)
def _job_progress(url: str, run_id: int) -> None:
    """The explain job's progress, polled each second; when it ends the whole page reruns."""
    job = explain_jobs.job(url, run_id)
    if job is None:
        return
    if job.what.get("kind", "explain") != "explain":  # a gallery's Grad-CAM or a split's predictions
        if job.running:
            st.info("Another explanation of this run is being computed in the background…")
        else:
            explain_jobs.finish(url, run_id)  # its own panel shows its result
            st.rerun()
        return
    if job.running:
        last = job.output().splitlines()[-1:] or [""]
        st.info(
            f"Computing explanations ({job.what['method'].upper()}, {job.what['checkpoint']}) in the background… {plain(last[0])}"
        )
        return
    st.session_state[f"explain_result_{run_id}"] = explain_jobs.finish(url, run_id)
    st.rerun()


def render(url: str, run_id: int, cfg: dict, run_dir: str | None, checkpoint_names: list[str]) -> None:
    ss = st.session_state
    if not checkpoint_names:
        st.info("Explanations need a checkpoint: one is written at the end of every epoch.")
        return
    c = st.columns([2, 2, 2], vertical_alignment="bottom")
    default = checkpoint_names.index("best") if "best" in checkpoint_names else len(checkpoint_names) - 1
    ck = c[0].selectbox("Checkpoint", checkpoint_names, index=default, key=f"explain_ckpt_{run_id}")
    method = c[1].radio(
        "Projection", ["pca", "umap"], horizontal=True, key=f"explain_method_{run_id}", format_func=str.upper
    )
    emb = explain_jobs.cached(url, run_id, ck, "embedding", "test", method)
    cams = explain_jobs.cached(url, run_id, ck, "gradcam", "test")
    job = explain_jobs.job(url, run_id)
    busy = job is not None and (job.running or job.what.get("kind", "explain") == "explain")
    if c[2].button(
        "Compute explanations" if emb is None else "Recompute",
        key=f"explain_go_{run_id}",
        disabled=busy,
        width="stretch",
        help="Runs python -m engine explain in the background: test-set features, a 2-D projection, Grad-CAM maps",
    ):
        explain_jobs.start(url, run_id, ck, "test", method, log_dir=run_dir)
        st.rerun()
    if busy:
        _job_progress(url, run_id)
    if res := ss.pop(f"explain_result_{run_id}", None):
        ok, out = res
        if not ok:
            st.error(plain(out.splitlines()[-1] if out else "the explain job failed"))
    if emb is None and cams is None:
        if not busy:
            st.info("Not computed yet for this checkpoint and projection: press **Compute explanations**.")
        return
    sp, err = reads.splits(url, json.dumps(cfg.get("data", {})))
    if sp is None:
        st.warning(f"The images cannot be shown: {plain(err)}")
        return
    names = sp.class_names
    if cams is not None:
        st.markdown(
            f"**Grad-CAM** on `{plain(cams['meta']['layer'])}` — the {len(cams['index'])} highest-loss test images: "
            "where the evidence for the predicted class (left) and for the true class (right) lies"
        )
        tiles, captions = cam_tiles(cams, sp.test_x, names)
        st.image(tiles, caption=captions, width=160)
    if emb is not None:
        meta = emb["meta"]
        st.markdown(
            f"**Embedding** — {meta['feature_dim']}-dimensional penultimate features of {len(emb['index'])} test "
            f"images, {meta['method'].upper()} to 2-D; ✕ = misclassified. k-NN accuracy in this 2-D view: "
            f"{meta['knn_accuracy']:.1%} (chance {1 / max(1, len(names)):.0%})"
        )
        color = st.radio(
            "Colour by",
            ["target", "pred"],
            horizontal=True,
            key=f"explain_color_{run_id}",
            format_func=lambda v: "true class" if v == "target" else "predicted class",
        )
        chart_key = f"explain_emb_{run_id}_{method}_{color}"
        left, right = st.columns([3, 1])
        event = left.plotly_chart(
            px.embedding_figure(emb, color), key=chart_key, on_select="rerun", selection_mode="points"
        )
        picked = px.selected_index((event or {}).get("selection"))
        with right:
            if picked is None:
                st.caption("Click a point to see its image.")
            elif 0 <= picked < len(sp.test_y):
                st.image(plots.display_image(sp.test_x[picked], 128), width=128)
                pos = np.flatnonzero(emb["index"] == picked)
                pred = int(emb["pred"][pos[0]]) if len(pos) else None
                st.caption(
                    f"test image #{picked}: true {plain(names[sp.test_y[picked]])}"
                    + (f", predicted {plain(names[pred])}" if pred is not None else "")
                )


def cam_tiles(cams: dict, images, names, prefix: str = "") -> tuple[list[np.ndarray], list[str]]:
    """One tile per image of cached Grad-CAM maps: the map for the predicted class beside the one for the
    true class, and its caption."""
    from engine.explain import overlay  # here, not at import: it brings torch and OpenCV

    def name(k):
        return plain(names[k]) if 0 <= k < len(names) else str(k)

    tiles, captions = [], []
    for k, i in enumerate(cams["index"]):
        img = images[int(i)]
        a = overlay(img, cams["cam_pred"][k].astype(np.float32), 72)
        b = overlay(img, cams["cam_true"][k].astype(np.float32), 72)
        tiles.append(np.concatenate([a, np.full((a.shape[0], 4, 3), 255, np.uint8), b], axis=1))
        t, p = int(cams["target"][k]), int(cams["pred"][k])
        captions.append(f"{prefix}#{int(i)} predicted {name(p)} ({float(cams['confidence'][k]):.0%}) · true {name(t)}")
    return tiles, captions


@st.fragment(run_every=1)
def job_progress(url: str, run_id: int, key: str, text: str) -> None:
    """A panel's own explain job (a gallery's Grad-CAM, a split's predictions), polled each second; when it
    ends its outcome goes to session_state[key + "_result"] and the whole page reruns with what it cached."""
    job = explain_jobs.job(url, run_id)
    if job is None:
        return
    if job.running:
        last = job.output().splitlines()[-1:] or [""]
        st.info(f"{text} in the background… {plain(last[0])}")
        return
    st.session_state[f"{key}_result"] = explain_jobs.finish(url, run_id)
    st.rerun()


def gallery_gradcam(
    url: str, run_id: int, checkpoint: str | None, split: str, indices, images, names, key: str, run_dir=None
) -> None:
    """Under a gallery of `split` images: "Explain these with Grad-CAM" for exactly the images shown
    (`indices`, into the split), computed by the background explain job with `checkpoint`; once cached,
    their maps for the predicted and the true class."""
    from engine.explain import MAX_SELECTION, selection_tag

    indices = [int(i) for i in indices][:MAX_SELECTION]
    if not indices:
        return
    if checkpoint not in explain_jobs.checkpoint_paths(url, run_id):
        st.caption(f"Grad-CAM needs the run's {plain(checkpoint or 'best')} checkpoint on disk.")
        return
    ss = st.session_state
    job = explain_jobs.job(url, run_id)
    what = job.what if job is not None else {}
    mine = what.get("selection") == selection_tag(indices) and (what.get("split"), what.get("checkpoint")) == (
        split,
        checkpoint,
    )
    if mine:
        if job.running:
            job_progress(url, run_id, key, f"Computing Grad-CAM of these {len(indices)} images")
            return
        ss[f"{key}_result"] = explain_jobs.finish(url, run_id)
    if res := ss.pop(f"{key}_result", None):
        ok, out = res
        if not ok:
            st.error(plain(out.splitlines()[-1] if out else "the Grad-CAM job failed"))
    cams = explain_jobs.cached_selection(url, run_id, checkpoint, split, indices)
    if cams is not None:
        st.markdown(
            f"**Grad-CAM of these {len(indices)} {split} image(s)** ({plain(checkpoint)} checkpoint, epoch "
            f"{cams['meta']['epoch']}, on `{plain(cams['meta']['layer'])}`): where the evidence for the predicted "
            "class (left) and for the true class (right) lies"
        )
        tiles, captions = cam_tiles(cams, images, names, prefix=f"{split} ")
        st.image(tiles, caption=captions, width=160)
        return
    busy = job is not None and job.running
    if st.button(
        "Explain these with Grad-CAM",
        key=key,
        disabled=busy,
        help="Runs python -m engine explain in the background on the images shown: Grad-CAM maps for their "
        f"predicted and their true class, with the {checkpoint} checkpoint"
        + (" (another explanation of this run is being computed)" if busy else ""),
    ):
        explain_jobs.start(url, run_id, checkpoint, split, indices=indices, log_dir=run_dir)
        st.rerun()


def tta_cost(tta, class_names: list[str], checkpoint: str, run_id: int) -> None:
    """TTA cost and benefit: per variant, the accuracy gain (overall and per class) against the wall
    time per image, so 8 views can be weighed against 8× the time."""
    frame = px.tta_cost_frame(tta, class_names, checkpoint)
    if frame.empty:
        return
    st.markdown(f"**Cost and benefit** ({plain(checkpoint)}): accuracy gain over *none* against time per image")
    if frame["ms_per_image"].isna().all():
        st.caption("These TTA results were recorded without timings (evaluate the checkpoint again to time them).")
    else:
        st.plotly_chart(px.tta_cost_figure(frame), key=f"detail_tta_cost_{run_id}")
    fmt = {
        c: st.column_config.NumberColumn(c.removeprefix("gain "), format="%+.1f")
        for c in frame
        if c.startswith("gain ")
    }
    st.dataframe(
        frame,
        hide_index=True,
        placeholder="–",
        column_config={
            **fmt,
            "ms_per_image": st.column_config.NumberColumn("ms / image", format="%.4f"),
            "cost_x": st.column_config.NumberColumn("× none", format="%.1f×"),
            "accuracy": st.column_config.NumberColumn("Test accuracy", format="percent"),
            "gain_pp": st.column_config.NumberColumn("Gain (pp)", format="%+.2f"),
        },
    )
    st.caption("Per-class columns: each class's accuracy gain in points over the plain prediction.")
