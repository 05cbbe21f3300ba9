"""Data-health sections, drawn on the Datasets page and on Run detail: near-duplicates between the
training and the test split, label-noise suspects from a run's stored predictions (validation, test, and
the training split, predicted with the best checkpoint by a background explain job), class imbalance
with a one-click "use this loss" that opens the builder with the suggested loss.

Not a page of its own: the pages call these functions. The work is engine.health's (pure functions
on arrays); the hashes are cached on disk by content, the pairs here per session."""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from control import explain_jobs
from dashboard import plots, reads
from dashboard import plots_explain as px
from dashboard.text import plain
from dashboard.views import explain_panel
from engine import health

TRAIN_CHECKPOINT = "best"  # the checkpoint that predicts the training split for its label-noise suspects


@st.cache_data(max_entries=16, show_spinner="Hashing the images (once per dataset)…")
def _duplicates(url: str, data_json: str, threshold: int) -> dict:
    sp, _ = reads.splits(url, data_json)
    found = health.scan_duplicates(sp.train_x, sp.test_x, threshold)
    found.pop("min_distance")
    return found


def duplicates_section(url: str, data_json: str, key: str) -> None:
    """Train/test pairs within a pHash Hamming distance, shown side by side (the images are loaded
    only once asked for)."""
    c = st.columns([2, 3], vertical_alignment="bottom")
    threshold = c[0].slider(
        "Hamming distance at most (of 64 bits)",
        0,
        16,
        health.DEFAULT_HAMMING,
        key=f"{key}_hamming",
        help="Perceptual hash (pHash): 0 = the same picture; a few bits = re-saved, resized or slightly noisy copies",
    )
    go = c[1].toggle("Look for train/test near-duplicates", key=f"{key}_dups_on", help="Hashes every image once")
    if not go:
        return
    sp, err = reads.splits(url, data_json)
    if sp is None:
        st.warning(f"The images cannot be loaded: {plain(err)}")
        return
    found = _duplicates(url, data_json, int(threshold))
    pairs = found["pairs"]
    if not pairs:
        st.success(f"No near-duplicate: no test image is within {threshold} bits of a training image.")
        return
    st.warning(
        f"{found['test_images']} test image(s) ({found['share']:.1%} of the test split) have a near-duplicate "
        f"in the training split ({found['total_pairs']} pair(s)): their test accuracy measures memory, not "
        "generalisation."
    )
    if sp.image_size < 32:
        st.caption(
            f"These images are {sp.image_size} px: less detail than the 32×32 the hash reads, so similar-looking "
            "images of a class also come close — look at the pairs, or lower the distance."
        )
    names = sp.class_names
    shown = pairs[:24]
    st.caption(f"The closest {len(shown)} pair(s): training image left, test image right.")
    tiles, captions = [], []
    for p in shown:
        a, b = plots.display_image(sp.train_x[p["train"]], 64), plots.display_image(sp.test_x[p["test"]], 64)
        tiles.append(np.concatenate([a, np.full((a.shape[0], 4) + a.shape[2:], 255, a.dtype), b], axis=1))
        captions.append(
            f"train #{p['train']} ({plain(names[sp.train_y[p['train']]])}) · test #{p['test']} "
            f"({plain(names[sp.test_y[p['test']]])}) · d={p['distance']}"
        )
    st.image(tiles, caption=captions, width=140)


def imbalance_section(counts, class_names, base_config: dict, key: str, parent: int | None = None) -> None:
    """Counts, ratio, inverse-frequency weights and the suggested loss; the button sends the config
    with that loss to the builder."""
    report = health.imbalance_report(counts, class_names)
    m = st.columns(3)
    m[0].metric("Imbalance ratio (largest / smallest)", f"{report['ratio']:.2f}")
    m[1].metric("Smallest class", f"{min(report['counts']):,}" if report["counts"] else "–")
    m[2].metric("Largest class", f"{max(report['counts']):,}" if report["counts"] else "–")
    if report["empty_classes"]:
        st.error("Classes with no training image: " + plain(", ".join(report["empty_classes"])))
    st.plotly_chart(px.imbalance_figure(report), key=f"{key}_imbalance")
    st.caption(plain(f"Suggestion: {report['why']}."))
    if report["loss"] is None:
        return
    loss_text = ", ".join(f"{k}: {v}" for k, v in report["loss"].items())
    if st.button(f"Use this loss ({loss_text})", key=f"{key}_use_loss", help="Opens the builder with this loss set"):
        st.session_state["builder_send"] = {
            "config": health.with_loss(base_config, report["loss"]),
            "notice": f"Loss set to {loss_text} for a class imbalance of {report['ratio']:.1f}×.",
            "parent": parent,
        }
        st.switch_page("views/new_run.py")


def train_predictions(url: str, run_id: int) -> dict | None:
    """The training split predicted by the run's best checkpoint (cached by the explain job), shaped as a
    stored evaluation ({split, checkpoint, epoch, predictions}), or None when not computed yet."""
    got = explain_jobs.cached(url, run_id, TRAIN_CHECKPOINT, "predictions", "train")
    if got is None:
        return None
    preds = {k: got[k].tolist() for k in ("target", "pred", "confidence", "loss")}
    return {"split": "train", "checkpoint": TRAIN_CHECKPOINT, "epoch": got["meta"]["epoch"], "predictions": preds}


def _train_job(url: str, run_id: int, run_dir, key: str, have: bool) -> None:
    """The button that predicts the training split in the background (once per best checkpoint), its progress."""
    ss = st.session_state
    job = explain_jobs.job(url, run_id)
    mine = job is not None and (job.what.get("kind"), job.what.get("split")) == ("predictions", "train")
    if mine and job.running:
        explain_panel.job_progress(url, run_id, f"{key}_train", "Predicting every training image")
        return
    if mine:
        ss[f"{key}_train_result"] = explain_jobs.finish(url, run_id)
    if res := ss.pop(f"{key}_train_result", None):
        ok, out = res
        if ok:
            ss[f"{key}_show_train"] = True  # show the training suspects once they are there
        else:
            st.error(plain(out.splitlines()[-1] if out else "predicting the training split failed"))
    if have or TRAIN_CHECKPOINT not in explain_jobs.checkpoint_paths(url, run_id):
        return
    busy = job is not None and job.running
    if st.button(
        "Find suspects in the training split",
        key=f"{key}_train_go",
        disabled=busy,
        help=f"Predicts every training image with the {TRAIN_CHECKPOINT} checkpoint in the background (as an "
        "evaluation does: no augmentation) and ranks the confidently wrong ones"
        + (" — another explanation of this run is being computed" if busy else ""),
    ):
        explain_jobs.start(url, run_id, TRAIN_CHECKPOINT, "train", predictions=True, log_dir=run_dir)
        st.rerun()


def noise_section(
    url: str, data_json: str, evaluations: list[dict], key: str, run_id: int | None = None, run_dir=None
) -> None:
    """Confidently wrong images of a stored validation or test evaluation, or of the training split
    predicted by the run's best checkpoint: label-noise suspects, with Grad-CAM on demand."""
    ss = st.session_state
    usable = [e for e in evaluations if (e.get("predictions") or {}).get("target")]
    if run_id is not None:
        train = train_predictions(url, run_id)
        usable += [train] if train is not None else []
        _train_job(url, run_id, run_dir, key, train is not None)
    if not usable:
        st.info("Label-noise suspects appear when the run has a stored validation or test evaluation.")
        return
    labels = [
        f"{e['split']} · {e['checkpoint']} (epoch {e['epoch']})"
        + (" — every training image, no augmentation" if e["split"] == "train" else "")
        for e in usable
    ]
    if ss.pop(f"{key}_show_train", False) and usable[-1]["split"] == "train":
        ss[f"{key}_ev"] = labels[-1]
    if ss.get(f"{key}_ev") not in labels:
        ss[f"{key}_ev"] = labels[-1]  # the newest
    c = st.columns([3, 2], vertical_alignment="bottom")
    pick = c[0].selectbox("Predictions of", labels, key=f"{key}_ev")
    min_conf = c[1].slider("Confidence at least", 0.0, 1.0, 0.5, 0.05, key=f"{key}_conf")
    ev = usable[labels.index(pick)]
    suspects = health.label_noise_suspects(ev["predictions"], top=48, min_confidence=min_conf)
    sp, err = reads.splits(url, data_json)
    x, y = (None, None) if sp is None else _split_of(sp, ev["split"])
    if x is None or not np.array_equal(np.asarray(ev["predictions"]["target"]), y):
        st.warning(
            "The images of this split cannot be matched to the stored predictions." + (f" {plain(err)}" if err else "")
        )
        return
    st.caption(
        f"{len(suspects)} image(s) the model puts, with at least {min_conf:.0%} confidence, in another class than "
        "their label — most confident first. Look at them: a wrong label, an ambiguous image, or a real mistake."
    )
    names = sp.class_names
    if suspects:
        st.image(
            [plots.display_image(x[s["index"]], 80) for s in suspects],
            caption=[
                f"{ev['split']} #{s['index']} label {plain(names[s['label']])} · predicted {plain(names[s['pred']])} "
                f"({s['confidence']:.0%})"
                for s in suspects
            ],
            width=96,
        )
        if run_id is not None:
            explain_panel.gallery_gradcam(
                url,
                run_id,
                ev["checkpoint"],
                ev["split"],
                [s["index"] for s in suspects],
                x,
                names,
                f"{key}_noise_cam",
                run_dir,
            )


def _split_of(sp, split: str):
    return {"train": (sp.train_x, sp.train_y), "val": (sp.val_x, sp.val_y), "test": (sp.test_x, sp.test_y)}[split]


def render_run(url: str, run_id: int, cfg: dict, evaluations: list[dict], run_dir=None) -> None:
    """Run detail's data-health tab."""
    data_json = json.dumps(cfg.get("data", {}))
    st.markdown("**Label-noise suspects** — confidently wrong images")
    noise_section(url, data_json, evaluations, f"health_{run_id}", run_id, run_dir)
    st.markdown("**Near-duplicates between this run's train and test splits**")
    duplicates_section(url, data_json, f"health_{run_id}")
    sp, _ = reads.splits(url, data_json)
    if sp is not None:
        st.markdown("**Class balance of this run's training split**")
        counts = np.bincount(sp.train_y, minlength=sp.num_classes)
        imbalance_section(counts, sp.class_names, cfg, f"health_{run_id}", parent=run_id)
