"""Run detail: one run's status, live curves, confusion matrices, error galleries, per-class scores,
TTA, checkpoints, log and downloads.

Layout only. Reads: db.queries through dashboard.reads (cached by progress); figures and tables:
dashboard.plots; actions: control.launcher (stop/resume), dashboard.actions (evaluate a checkpoint
with `python -m engine evaluate`, log tail). The run comes from ?run=<id>, else the newest running
run, else the newest run.
"""

import json
import os

import numpy as np
import streamlit as st

from control import explain_jobs, launcher
from dashboard import actions, forms, live_text, plots, plots_diagnosis, reads
from dashboard.confusion_picker import confusion_picker
from dashboard.state import db_url_for_session
from dashboard.text import init_from_text, plain
from dashboard.views import checkpoint_view, explain_panel, health_panel, image_history, run_diagnosis
from db import queries
from db.models import ACTIVE, RESUMABLE, RunStatus
from engine.config import TTA_DESCRIPTIONS, TTA_VARIANTS

url = db_url_for_session()
ss = st.session_state

runs = reads.runs(url)
if runs.empty:
    st.title("Run detail")
    st.info("No runs yet — start one on **New run**.")
    st.page_link("views/new_run.py", label="Start a run", icon="🧪")
    st.stop()

# ------------------------------------------------------------------------------- which run
ids = [int(i) for i in runs["id"]]
asked = st.query_params.get("run")
if asked is not None and asked.isdigit() and int(asked) in ids:
    run_id = int(asked)
else:
    if asked is not None:
        st.warning(f"There is no run #{asked}; showing another one.")
    run_id = ss.get("detail_run") if ss.get("detail_run") in ids else queries.default_run_id(url)
ss["detail_run"] = run_id
st.query_params["run"] = str(run_id)  # the address bar is a link to this run
labels = {int(r["id"]): plots.run_option_label(r) for r in runs.to_dict("records")}


def _on_pick():
    st.query_params["run"] = str(ss["detail_run"])


head = st.columns([3, 2], vertical_alignment="bottom")
head[1].selectbox("Run", ids, key="detail_run", format_func=lambda i: labels.get(i, f"#{i}"), on_change=_on_pick)

row = queries.get_run(url, run_id)
cfg = row["config"]
status = row["status"]
active = status in ACTIVE
data_json = json.dumps(cfg.get("data", {}))

head[0].title(f"Run #{run_id}" + (f" · {plain(row['name'])}" if row["name"] else ""))
st.markdown(
    f"**{plots.status_label(status)}** · dataset {plain(row['dataset'])} · model {plain(row['model'])} · "
    f"{row['epochs_done']} / {row['epochs_planned']} epochs"
    + (f" · tags: {plain(', '.join(row['tags']))}" if row["tags"] else "")
)
st.caption(plain(forms.config_summary(cfg)) + (f"  \n📝 {plain(row['notes'])}" if row["notes"] else ""))
run_diagnosis.lr_find_note(url, run_id)  # its LR came from the builder's LR range test
if row["error"]:
    st.error(f"**{status}**: {plain(row['error'])}")
    if row.get("traceback"):
        with st.expander("Traceback"):
            st.code(row["traceback"], language="text")

# ------------------------------------------------------------------------------- actions
b = st.columns(6)
if b[0].button("⏹ Stop", disabled=not active, width="stretch", help="Finish the current step, keep finished epochs"):
    with st.spinner("Stopping…"):
        ss["detail_notice"] = f"Run #{run_id}: {launcher.stop_run(url, run_id)}"
    reads.clear_run_caches()
    st.rerun()
if b[1].button(
    "▶ Resume", disabled=status not in RESUMABLE, width="stretch", help="Continue from the last checkpoint (same run)"
):
    launcher.resume_run(url, run_id)
    reads.clear_run_caches()
    st.rerun()
if b[2].button("🧬 Clone and edit", width="stretch", help="Open the builder prefilled with this config"):
    st.switch_page("views/new_run.py", query_params={"clone": str(run_id)})
yaml_text = forms.config_yaml(cfg)
b[3].download_button(
    "⬇ Config YAML",
    data=yaml_text or json.dumps(cfg, indent=2),
    width="stretch",
    file_name=f"run_{run_id}.yaml" if yaml_text else f"run_{run_id}.json",
    help="python -m engine train run.yaml reproduces the run",
)
wide = reads.history_wide(url, run_id, row["epochs_done"], status)  # one row per epoch
b[4].download_button(
    "⬇ Metrics CSV",
    data=wide.to_csv(index=False),
    file_name=f"run_{run_id}_metrics.csv",
    mime="text/csv",
    width="stretch",
    disabled=wide.empty,
    help="One row per epoch",
)
best = queries.checkpoint_path(url, run_id, "best")
best = best if best and os.path.isfile(best) else None
b[5].download_button(
    "⬇ Best checkpoint",
    data=actions.file_reader(best) if best else b"",
    width="stretch",
    file_name=f"run_{run_id}_best.pt",
    disabled=not best,
    mime="application/octet-stream",
    help="PyTorch state dict with class names and normalisation (other checkpoints: Checkpoints tab)",
)
if notice := ss.pop("detail_notice", None):
    st.toast(notice)

with st.expander("Where and how it runs"):
    info = {
        "host": row["host"],
        "device": row["device"],
        "data path": row["data_path"],
        "backend": row["backend"],
        "devices (processes)": (row["config"] or {}).get("train", {}).get("devices", 1),
        "pid": row["pid"],
        "external id": row["external_id"],
        "run dir": row["run_dir"],
        "log": row["log_path"],
        "created (UTC)": row["created_at"],
        "started (UTC)": row["started_at"],
        "ended (UTC)": row["ended_at"],
        "last heartbeat (UTC)": row["heartbeat_at"],
        "parent run": f"#{row['parent_run_id']}" if row["parent_run_id"] else None,
        "initialised from": init_from_text(reads.run_facts(url, run_id, row["status"]).get("init_from")),
    }
    st.table({k: "" if v is None else str(v) for k, v in info.items()})


# ------------------------------------------------------------------------------- live section
# While the run is active a fragment polls its progress every 2 s (one small query) and shows the
# log; when an epoch ends or the status changes it reruns the page, so every panel shows the new epoch.
@st.fragment(run_every=2 if active else None)
def live_progress():
    progress = queries.run_progress(url, run_id)
    if progress is None or (progress["status"], progress["epochs_done"]) != (status, row["epochs_done"]):
        st.rerun()
    if not active:
        return
    done, planned = progress["epochs_done"] or 0, max(1, progress["epochs_planned"] or 1)
    st.progress(
        min(1.0, done / planned),
        text=f"{plots.status_label(status)} — {done} of {planned} epochs done"
        + (" (waiting for a free slot)" if status == RunStatus.QUEUED else ""),
    )
    # inside the epoch or the final evaluation: the engine's heartbeat carries its phase, step, images/s, ETA
    phase_text = live_text.progress_text(progress.get("progress"), done, planned) if status == "running" else None
    if phase_text:
        st.progress(live_text.share(progress["progress"]) or 0.0, text=f"Now: {phase_text}")
    with st.expander("Log (last 30 lines, live)"):
        st.code(actions.log_tail(row["log_path"], 30) or "(no log yet)", language="text")


st.subheader("Learning curves")
live_progress()
if not wide.empty and len(wide.columns) > 1:
    last = wide.iloc[-1]
    prev = wide.iloc[-2] if len(wide) > 1 else None

    def _delta(col, pct=True):
        if prev is None or col not in wide or np.isnan(prev[col]):
            return None
        d = last[col] - prev[col]
        return f"{100 * d:+.2f} pp" if pct else f"{d:+.4f}"

    m = st.columns(5)
    m[0].metric("Val accuracy", plots.format_pct(last.get("val_acc")), _delta("val_acc"))
    m[1].metric("Best val accuracy", plots.format_pct(wide["val_acc"].max() if "val_acc" in wide else None))
    m[2].metric(
        "Val loss",
        f"{last['val_loss']:.4f}" if "val_loss" in wide else "–",
        _delta("val_loss", pct=False),
        delta_color="inverse",
    )
    m[3].metric(
        "Train loss",
        f"{last['train_loss']:.4f}" if "train_loss" in wide else "–",
        _delta("train_loss", pct=False),
        delta_color="inverse",
    )
    m[4].metric("Throughput", f"{last['train_images_per_sec']:,.0f} img/s" if "train_images_per_sec" in wide else "–")
best_by = (cfg.get("eval") or {}).get("best_metric", "val_acc")
curves = reads.learning_curves(
    url, run_id, row["epochs_done"], status, best_by
)  # best epoch and overfitting onset marked
if curves is not None:  # the curves' one-line reading (engine.diagnose), beside the figure
    st.markdown(plots_diagnosis.reading_line(plots_diagnosis.curve_reading(wide, best_by)))
if curves is None:
    st.info("Waiting for the first epoch to finish…" if active else "This run recorded no epochs.")
elif not active:
    st.plotly_chart(curves, key="detail_curves")
else:  # while it runs: the latest validation confusion matrix beside the curves
    left, right = st.columns([3, 2])
    left.plotly_chart(curves, key="detail_curves")
    latest = queries.latest_confusion(url, run_id, "val")
    if latest is not None:
        epoch, matrix = latest
        right.plotly_chart(
            plots.confusion_figure(
                matrix,
                reads.class_names(url, data_json, len(matrix)),
                clickable=False,
                title=f"Validation confusion, epoch {epoch}",
            ),
            key="detail_live_cm",
        )


# ------------------------------------------------------------------------------- analysis tabs
@st.fragment(run_every=1 if actions.evaluation_job(url, run_id) is not None else None)
def evaluation_progress():
    """The background evaluation's progress, polled; when it ends the whole page reruns with its results."""
    job = actions.evaluation_job(url, run_id)
    if job is None:
        return
    if job.running:
        st.info(
            f"Evaluating {job.what['checkpoint']} on the {job.what['split']} split in the background — {job.progress()}"
        )
        return
    ss["detail_eval_result"] = actions.finish_evaluation(url, run_id)
    reads.clear_run_caches()
    st.rerun()


evaluation_progress()  # above the tabs: a background evaluation is followed whichever tab is open
if res := ss.pop("detail_eval_result", None):
    ok, out = res
    (st.success if ok else st.error)(plain(out) or ("done" if ok else "the evaluation failed"))
picked = checkpoint_view.picker(url, run_id, row)  # the checkpoint every test-side tab shows (best by default)
t_cm, t_err, t_cls, t_tta, t_health, t_explain, t_cal, t_export, t_ckpt, t_log, t_cfg = st.tabs(
    [
        "Confusion by epoch",
        "Test errors & gallery",
        "Per class",
        "TTA",
        "Data health",
        "Explain",
        "Calibration",
        "Export",
        "Checkpoints",
        "Log",
        "Config",
    ],
    key="detail_tabs",
    on_change="rerun",  # lazy tabs: only the open one is computed, so a rerun costs one tab, not eleven
)


def _follow_newest(key: str, options: list) -> str:
    """A slider over epochs that stays on the newest one as epochs arrive, unless the user moved it
    elsewhere. (A keyed widget keeps its old value when its options grow.)"""
    newest_key = key + ":newest"
    if ss.get(key) not in options or ss.get(key) == ss.get(newest_key):
        ss[key] = options[-1]
    ss[newest_key] = options[-1]
    return key


if t_cm.open:
    with t_cm:
        mats = reads.confusions(url, run_id, "val", row["epochs_done"], status)
        if not mats:
            st.info("The validation confusion matrix appears after the first epoch.")
        else:
            epochs = sorted(mats)
            c = st.columns([4, 1], vertical_alignment="bottom")
            if len(epochs) > 1:
                epoch = c[0].select_slider("Epoch", epochs, key=_follow_newest(f"detail_cm_epoch_{run_id}", epochs))
            else:
                epoch = epochs[0]
                c[0].caption(f"Epoch {epoch} (the only one so far)")
            norm = c[1].toggle(
                "Normalise rows", key="detail_cm_norm", help="Each row sums to 100 %: recall per true class"
            )
            names = reads.class_names(url, data_json, len(mats[epoch]))
            image_history.val_confusion(
                url, run_id, data_json, epoch, mats, names, norm, row
            )  # a cell opens its images
            worst = plots.top_confusions(mats[epoch], names)
            if worst:
                st.caption(
                    "Most frequent mistakes: " + plain("; ".join(f"{names[t]} → {names[p]} ({n})" for t, p, n in worst))
                )
            image_history.history_panel(url, run_id, data_json, mats, names, row)

evaluations = reads.evaluations(url, run_id, status)
tests = [e for e in evaluations if e["split"] == "test"]


def _eval_label(e):
    return f"{e['checkpoint']} checkpoint, epoch {e['epoch']} — test accuracy {e['accuracy']:.2%}"


def _test_gallery(sp, idx, captions, kind: str, ev: dict, names, stretch: bool) -> None:
    """Test images of evaluation `ev` with their captions, and under them "Explain these with Grad-CAM"
    for exactly those images: the evidence for the predicted and the true class."""
    st.image([plots.display_image(sp.test_x[i], stretch=stretch) for i in idx], caption=captions, width=96)
    explain_panel.gallery_gradcam(
        url, run_id, ev["checkpoint"], "test", idx, sp.test_x, names, f"detail_{kind}_cam_{run_id}", row["run_dir"]
    )


if t_err.open:
    with t_err:
        if picked is None:
            st.info(checkpoint_view.NOT_EVALUATED)
        else:
            ev = picked
            preds = ev.get("predictions") or {}
            n = len(ev["confusion"])
            names = reads.class_names(url, data_json, n)
            right, true_c, pred_c = confusion_picker(
                ev["confusion"],
                names,
                title=f"Test confusion ({ev['checkpoint']}, epoch {ev['epoch']})",
                caption="Click a cell to see its images.",
                keys=(f"detail_true_{run_id}", f"detail_pred_{run_id}", f"detail_test_cm_{run_id}"),
                normalise_key="detail_test_norm",
            )
            with right:
                stretch = plots.stretch_toggle(st, key="detail_stretch")  # display only, for the galleries below
                sp, err = reads.splits(url, data_json)
                if sp is None:
                    st.warning(f"The images cannot be shown: {plain(err)}")
                elif not preds:
                    st.info("This evaluation stored no per-image predictions.")
                elif not np.array_equal(np.asarray(preds["target"]), sp.test_y):
                    st.warning("The dataset on disk no longer matches this run's test split; images cannot be matched.")
                else:
                    idx = plots.matching_predictions(preds, true_c, pred_c, limit=48)
                    st.caption(
                        f"{len(idx)} image(s) shown"
                        + (" (first 48)" if len(idx) == 48 else "")
                        + " — wrong predictions by confidence, right ones least confident first"
                    )
                    if idx:
                        _test_gallery(
                            sp, idx, [plots.prediction_caption(preds, i, names) for i in idx], "err", ev, names, stretch
                        )
            if preds:
                sp, _ = reads.splits(url, data_json)
                st.markdown("**Highest-loss test images** — the model's most confident mistakes and hardest cases")
                if sp is not None and np.array_equal(np.asarray(preds["target"]), sp.test_y):
                    idx = plots.top_loss_indices(preds, 24)
                    _test_gallery(
                        sp,
                        idx,
                        [plots.prediction_caption(preds, i, names, with_loss=True) for i in idx],
                        "loss",
                        ev,
                        names,
                        stretch,
                    )

if t_cls.open:
    with t_cls:
        if picked is None:
            st.info(checkpoint_view.NOT_EVALUATED)
        else:
            ev = picked
            names = reads.class_names(url, data_json, len(ev["confusion"]))
            st.caption(_eval_label(ev))
            st.plotly_chart(plots.per_class_bars(ev["per_class"], names), key="detail_per_class")
            st.dataframe(
                plots.per_class_frame(ev["per_class"], names),
                placeholder="–",  # a missing value, not the word None
                hide_index=True,
                column_config={
                    "precision": st.column_config.NumberColumn(format="%.3f"),
                    "recall": st.column_config.NumberColumn(format="%.3f"),
                    "f1": st.column_config.NumberColumn("F1", format="%.3f"),
                },
            )

if t_tta.open:
    with t_tta:
        tta = checkpoint_view.tta_at(reads.tta(url, run_id, status), picked)
        if tta.empty:
            st.info(
                "No test-time augmentation results. Pick variants in the builder's Evaluation tab (eval.tta), "
                "or evaluate a checkpoint with TTA in the Checkpoints tab."
            )
        else:
            st.plotly_chart(plots.tta_bars(tta, TTA_DESCRIPTIONS), key="detail_tta")
            st.dataframe(
                plots.tta_frame(tta, TTA_DESCRIPTIONS),
                placeholder="–",  # a missing value, not the word None
                hide_index=True,
                column_config={
                    "accuracy": st.column_config.NumberColumn("Test accuracy", format="percent"),
                    "gain_pp": st.column_config.NumberColumn("Gain vs none", format="%+.2f pp"),
                },
            )
            ckpts = list(dict.fromkeys(tta["checkpoint"]))
            ck = (
                st.selectbox("Per class, checkpoint", ckpts, key=f"detail_tta_ckpt_{run_id}")
                if len(ckpts) > 1
                else ckpts[0]
            )
            metric = st.radio("Per-class metric", ["accuracy", "f1"], horizontal=True, key="detail_tta_metric")
            table = plots.tta_per_class_frame(tta, reads.class_names(url, data_json, 0), metric, ck)
            if not table.empty:
                st.dataframe(
                    table,
                    column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns},
                    placeholder="–",
                )
            explain_panel.tta_cost(tta, reads.class_names(url, data_json, 0), ck, run_id)

if t_health.open:
    with t_health:
        health_panel.render_run(url, run_id, cfg, evaluations, row["run_dir"])

if t_explain.open:
    with t_explain:
        explain_panel.render(url, run_id, cfg, row["run_dir"], list(explain_jobs.checkpoint_paths(url, run_id)))


if t_ckpt.open:
    with t_ckpt:
        ckpts = reads.checkpoints(url, run_id, row["epochs_done"], status)
        if not ckpts:
            st.info("No checkpoints yet: one is written at the end of every epoch.")
        else:
            frame = plots.checkpoints_frame(ckpts)
            st.dataframe(
                frame,
                placeholder="–",  # a missing value, not the word None
                hide_index=True,
                column_config={
                    "size_mb": st.column_config.NumberColumn("Size", format="%.1f MB"),
                    "path": st.column_config.TextColumn("Path", width="large"),
                },
            )
            usable = [r for r in frame.to_dict("records") if r["on disk"]]
            if usable:
                by_label = {r["checkpoint"]: r for r in usable}
                c = st.columns([2, 3, 2], vertical_alignment="bottom")
                label = c[0].selectbox("Checkpoint", list(by_label), key=f"detail_ckpt_{run_id}")
                tta_pick = c[1].multiselect(
                    "With TTA variants (optional)",
                    list(TTA_VARIANTS),
                    key="detail_ckpt_tta",
                    help="\n".join(f"- {k}: {v}" for k, v in TTA_DESCRIPTIONS.items()),
                )
                busy = actions.evaluation_job(url, run_id) is not None
                kept = checkpoint_view.kept(url, run_id, row, label) and not tta_pick  # evaluated once, then kept
                if c[2].button(
                    "🧪 Evaluate on test",
                    width="stretch",
                    disabled=status == RunStatus.QUEUED or busy or kept,
                    help="Runs python -m engine evaluate in the background; keep working meanwhile. Results "
                    "appear in the Test errors, Per class and TTA tabs",
                ):
                    actions.start_evaluation(url, run_id, label, tta_pick, log_dir=row["run_dir"])
                    st.rerun()
                st.download_button(
                    f"⬇ Download {label}.pt",
                    data=actions.file_reader(by_label[label]["path"]),
                    file_name=f"run_{run_id}_{label}.pt",
                    mime="application/octet-stream",
                )

if t_log.open:
    with t_log:
        text = actions.log_tail(row["log_path"], 300)
        if text is None:
            st.info("No log file yet." if active else "This run has no log file on this machine.")
        else:
            st.code(text, language="text")
            st.download_button(
                "⬇ Full log",
                data=actions.file_reader(row["log_path"]),
                file_name=f"run_{run_id}.log",
                mime="text/plain",
            )

if t_cfg.open:
    with t_cfg:
        st.code(yaml_text or json.dumps(cfg, indent=2), language="yaml")

if t_cal.open:  # reliability diagram and ECE of a stored test evaluation; temperature scaling as an engine job
    with t_cal:
        run_diagnosis.calibration(url, run_id, row, tests)

if t_export.open:  # a checkpoint to ONNX / TorchScript as an engine job, then a download
    with t_export:
        run_diagnosis.export(url, run_id, row)
