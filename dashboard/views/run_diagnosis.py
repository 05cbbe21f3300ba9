"""Run detail's diagnosis panels: the LR range test a run's LR came from, calibration (reliability diagram
and ECE of a stored test evaluation; temperature scaling fitted on validation and reported on test), and
export (a checkpoint to ONNX or TorchScript, checked against torch, then downloaded).

Not a page of its own: run_detail.py calls `lr_find_note`, `calibration` and `export` (its tabs). The ECE and bins of a stored
evaluation come from its per-image predictions (dashboard.plots_diagnosis over
engine.training.calibration). Temperature scaling needs every validation and test image's full
probabilities, which no table keeps, and export needs torch and onnx: both run as background engine jobs
(`python -m engine calibrate | export`, control.engine_jobs), writing their report or file into the run's
folder, so the page stays usable and the results outlive the session.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import streamlit as st

from control import engine_jobs
from dashboard import actions, plots, plots_diagnosis, reads
from dashboard.text import plain
from db import queries

FORMATS = {"ONNX": ("onnx", ".onnx"), "TorchScript": ("torchscript", ".torchscript.pt")}


def lr_find_note(url: str, run_id: int) -> None:
    """One caption when the run's LR came from an LR range test (runs.facts["lr_find"])."""
    fact = queries.run_facts(url, run_id).get("lr_find")
    if fact:
        st.caption(
            f"🔎 optim.lr {fact['suggested_lr']:.3g} was suggested by LR range test #{fact['id']} "
            f"({plain(fact.get('rule') or '?')} rule)"
        )


def _folder(row: dict) -> Path:
    base = Path(row["run_dir"]) if row.get("run_dir") else Path(tempfile.gettempdir()) / f"lab_run_{row['id']}"
    return base / "diagnosis"


def _usable_checkpoints(url: str, run_id: int, row: dict) -> dict[str, dict]:
    ckpts = reads.checkpoints(url, run_id, row["epochs_done"], row["status"])
    return {r["checkpoint"]: r for r in plots.checkpoints_frame(ckpts).to_dict("records") if r["on disk"]}


def calibration(url: str, run_id: int, row: dict, tests: list[dict]) -> None:
    """The Calibration tab."""
    _calibration(url, run_id, row, tests, _usable_checkpoints(url, run_id, row))
    _poll(url, run_id, "calibrate")


def export(url: str, run_id: int, row: dict) -> None:
    """The Export tab."""
    _export(url, run_id, row, _usable_checkpoints(url, run_id, row))
    _poll(url, run_id, "export")


# ------------------------------------------------------------------------------------- calibration
def _calibration(url: str, run_id: int, row: dict, tests: list[dict], usable: dict) -> None:
    with_preds = [e for e in tests if (e.get("predictions") or {}).get("confidence")]
    if not with_preds:
        st.info("The reliability diagram appears with a test evaluation that kept its predictions.")
    else:
        pick = st.selectbox(
            "Test evaluation",
            range(len(with_preds)),
            index=len(with_preds) - 1,
            key=f"diag_cal_eval_{run_id}",
            format_func=lambda i: f"{with_preds[i]['checkpoint']} checkpoint, epoch {with_preds[i]['epoch']}",
        )
        ev = with_preds[pick]
        cal = plots_diagnosis.stored_calibration(ev["predictions"])
        m = st.columns(4)
        m[0].metric(
            "ECE (15 bins)",
            f"{cal['ece']:.4f}",
            help="Expected calibration error: the image-weighted gap between confidence and accuracy over the bins",
        )
        m[1].metric("Accuracy", plots.format_pct(cal["accuracy"]))
        m[2].metric("Mean confidence", plots.format_pct(cal["mean_confidence"]))
        gap = cal["mean_confidence"] - cal["accuracy"]
        m[3].metric("Over-confidence", f"{100 * gap:+.2f} pp", help="Mean confidence minus accuracy")
        st.plotly_chart(
            plots_diagnosis.reliability_figure(
                cal["bins"], f"Reliability on test ({ev['checkpoint']}, epoch {ev['epoch']}, {cal['n']} images)"
            ),
            key=f"diag_reliability_{run_id}",
        )
    st.markdown("**Temperature scaling** — one temperature T fitted on the validation split, reported on test")
    if not usable:
        st.caption("Needs a checkpoint on disk.")
        return
    names = list(usable)
    default = next((e["checkpoint"] for e in reversed(with_preds) if e["checkpoint"] in usable), "best")
    c = st.columns([2, 2], vertical_alignment="bottom")
    ck = c[0].selectbox(
        "Checkpoint", names, index=names.index(default) if default in names else 0, key=f"diag_cal_ckpt_{run_id}"
    )
    key = ("calibrate", url, run_id)
    out = _folder(row) / f"calibration_{ck}.json"
    if c[1].button(
        "🌡 Fit temperature",
        key=f"diag_cal_start_{run_id}",
        disabled=engine_jobs.job(key) is not None,
        width="stretch",
        help="python -m engine calibrate in the background: the checkpoint's validation and test probabilities",
    ):
        argv = ["calibrate", "--run-id", str(run_id), "--checkpoint", ck, "--out", str(out)]
        engine_jobs.start(key, url, argv, out.with_suffix(".log"))
        st.rerun()
    if out.is_file():
        rep = json.loads(out.read_text())
        st.markdown(
            f"**T = {rep['temperature']:.3f}** (epoch {rep['epoch']}) · test ECE {rep['test_ece_before']:.4f} → "
            f"**{rep['test_ece_after']:.4f}** · test NLL {rep['test_nll_before']:.4f} → {rep['test_nll_after']:.4f} "
            f"· val NLL {rep['val_nll_before']:.4f} → {rep['val_nll_after']:.4f}"
        )
        st.plotly_chart(
            plots_diagnosis.reliability_figure(
                rep["test_bins_before"],
                f"Test reliability before and after T = {rep['temperature']:.3f}",
                after=rep["test_bins_after"],
            ),
            key=f"diag_reliability_ts_{run_id}",
        )


# ------------------------------------------------------------------------------------- export
def export_path(row: dict, checkpoint: str, fmt_label: str) -> Path:
    return _folder(row) / f"run_{row['id']}_{checkpoint}{FORMATS[fmt_label][1]}"


def _export(url: str, run_id: int, row: dict, usable: dict) -> None:
    if not usable:
        st.info("Export needs a checkpoint on disk: one is written at the end of every epoch.")
        return
    names = list(usable)
    c = st.columns([2, 2, 2], vertical_alignment="bottom")
    ck = c[0].selectbox("Checkpoint", names, key=f"diag_exp_ckpt_{run_id}")
    fmt = c[1].radio("Format", list(FORMATS), horizontal=True, key=f"diag_exp_fmt_{run_id}")
    key = ("export", url, run_id)
    out = export_path(row, ck, fmt)
    if c[2].button(
        "📦 Export",
        key=f"diag_exp_start_{run_id}",
        disabled=engine_jobs.job(key) is not None,
        width="stretch",
        help="python -m engine export in the background; the ONNX or TorchScript model's probabilities are "
        "checked against torch's before the file appears",
    ):
        argv = ["export", "--run-id", str(run_id), "--format", FORMATS[fmt][0], "--out", str(out), "--checkpoint", ck]
        engine_jobs.start(key, url, argv, out.with_name(out.name + ".log"))
        st.rerun()
    st.caption(
        "Input: uint8 images (N, H, W, C) at the run's size; output: class probabilities. The run's "
        "normalisation and the softmax are inside the graph."
    )
    if out.is_file():
        stale = os.path.getmtime(out) < os.path.getmtime(usable[ck]["path"])
        if stale:
            st.warning(f"The {ck} checkpoint changed after this export: export it again.")
        st.download_button(
            f"⬇ {out.name} ({out.stat().st_size / 1e6:.1f} MB)",
            data=actions.file_reader(str(out)),
            file_name=out.name,
            mime="application/octet-stream",
            key=f"diag_exp_download_{run_id}",
        )


# ------------------------------------------------------------------------------------- background jobs
def _poll(url: str, run_id: int, kind: str) -> None:
    """While the run's `kind` job runs, its progress every second; when it ends, the page reruns with its result."""
    keys = [(kind, url, run_id)]

    @st.fragment(run_every=1 if any(engine_jobs.job(k) for k in keys) else None)
    def poll():
        for k in keys:
            j = engine_jobs.job(k)
            if j is None:
                continue
            if j.running:
                last = j.output(1)
                st.info(
                    f"{k[0].capitalize()} running in the background — {j.elapsed():.0f} s"
                    + (f" · {plain(last[:200])}" if last else "")
                )
                continue
            engine_jobs.finish(k)
            st.session_state[f"diag_notice_{kind}_{run_id}"] = (j.returncode == 0, k[0], j.output(20))
            st.rerun()
        if (notice := st.session_state.pop(f"diag_notice_{kind}_{run_id}", None)) is not None:
            ok, what, text = notice
            if ok:
                st.success(
                    f"{what.capitalize()} done."
                    + (f" {plain(text.splitlines()[-1][:300])}" if what == "export" and text else "")
                )
            else:
                st.error(f"{what.capitalize()} failed:\n\n" + plain(text[-1500:] or "no output"))

    poll()
