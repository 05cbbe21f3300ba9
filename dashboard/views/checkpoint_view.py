"""Checkpoint-aware test views (not a page of its own): one picker above Run detail's tabs chooses the
checkpoint whose test evaluation the Test errors, Per class and TTA tabs show; best by default.

An evaluation is kept per checkpoint (the `evaluations` table, keyed by run, split and checkpoint name,
with the epoch of the weights it scored). A checkpoint whose kept evaluation scored the same epoch is
never evaluated again; one without (an epoch checkpoint nobody tested yet, or best/last moved on since)
offers "evaluate", which runs `python -m engine evaluate` in the background (dashboard.actions)."""

from __future__ import annotations

import os

import streamlit as st

from dashboard import actions, plots, reads
from db.models import RunStatus

ss = st.session_state


def choices(ckpts: list[dict], tests: list[dict]) -> list[dict]:
    """The checkpoints a test view can show: {label, epoch, on_disk, evaluation (the kept test evaluation of
    those very weights, else None)}; evaluations of checkpoints no longer stored are offered too."""
    latest: dict[str, dict] = {}
    for e in tests:  # oldest first: the newest evaluation of each checkpoint name wins
        latest[e["checkpoint"]] = e
    out, seen = [], set()
    for c in sorted(ckpts, key=lambda c: (c["kind"] != "best", c["kind"] != "last", c["epoch"])):
        label = plots.checkpoint_label(c)
        if label in seen:
            continue
        seen.add(label)
        ev = latest.get(label)
        out.append(
            {
                "label": label,
                "epoch": c["epoch"],
                "on_disk": bool(c["path"]) and os.path.isfile(c["path"]),
                "evaluation": ev if ev is not None and ev["epoch"] == c["epoch"] else None,
            }
        )
    for label, ev in latest.items():
        if label not in seen:
            out.append({"label": label, "epoch": ev["epoch"], "on_disk": False, "evaluation": ev})
    return out


def default_index(options: list[dict]) -> int:
    """best, else the first with an evaluation, else the first."""
    labels = [o["label"] for o in options]
    if "best" in labels:
        return labels.index("best")
    return next((i for i, o in enumerate(options) if o["evaluation"] is not None), 0)


def option_text(o: dict) -> str:
    ev = o["evaluation"]
    head = f"{o['label']} (epoch {o['epoch']})"
    if ev is not None:
        return f"{head} — test accuracy {ev['accuracy']:.2%}"
    return head + (" — not evaluated yet" if o["on_disk"] else " — not evaluated, file gone")


def picker(url: str, run_id: int, row: dict) -> dict | None:
    """The checkpoint picker; returns the chosen checkpoint's kept test evaluation (None if it has none)."""
    status = row["status"]
    tests = [e for e in reads.evaluations(url, run_id, status) if e["split"] == "test"]
    options = choices(reads.checkpoints(url, run_id, row["epochs_done"], status), tests)
    if not options:
        return None
    key = f"detail_test_ckpt_{run_id}"
    labels = [o["label"] for o in options]
    if ss.get(key) not in labels:
        ss[key] = labels[default_index(options)]
    by_label = {o["label"]: o for o in options}
    c = st.columns([3, 2], vertical_alignment="bottom")
    label = c[0].selectbox(
        "Test views at checkpoint",
        labels,
        key=key,
        format_func=lambda lab: option_text(by_label[lab]),
        help="The Test errors, Per class and TTA tabs show this checkpoint's test evaluation. Each checkpoint "
        "is evaluated once and kept.",
    )
    chosen = by_label[label]
    if chosen["evaluation"] is None:
        busy = actions.evaluation_job(url, run_id) is not None
        if c[1].button(
            f"🧪 Evaluate {label} on test",
            key=f"detail_test_ckpt_eval_{run_id}",
            width="stretch",
            disabled=busy or status == RunStatus.QUEUED or not chosen["on_disk"],
            help="Runs python -m engine evaluate in the background; the result is kept for this checkpoint",
        ):
            actions.start_evaluation(url, run_id, label, [], log_dir=row["run_dir"])
            st.rerun()
    return chosen["evaluation"]


NOT_EVALUATED = (
    "No test evaluation of this checkpoint yet: evaluate it with the button above (runs are evaluated on the "
    "test split when they finish)."
)


def tta_at(tta, picked: dict | None):
    """The TTA rows of the picked checkpoint (all of them when none is picked)."""
    if picked is None or tta.empty:
        return tta
    return tta[tta["checkpoint"] == picked["checkpoint"]]


def kept(url: str, run_id: int, row: dict, label: str) -> bool:
    """Whether checkpoint `label` already has a kept test evaluation of its current weights."""
    status = row["status"]
    tests = [e for e in reads.evaluations(url, run_id, status) if e["split"] == "test"]
    options = choices(reads.checkpoints(url, run_id, row["epochs_done"], status), tests)
    return any(o["label"] == label and o["evaluation"] is not None for o in options)
