"""The builder's "Find learning rate": an LR range test on the config being edited, run as a short
engine job in its own process (control.lr_find_jobs), polled until it ends, then plotted (loss against
LR, the suggestion marked and its rule named) with a button that puts the suggestion into the
optimizer's LR field. A run launched with that LR records {"lr_find": {id, suggested_lr, rule}} in
runs.facts (`on_launch`).
"""

from __future__ import annotations

import math

import streamlit as st

from control import lr_find_jobs
from dashboard import forms, plots_diagnosis
from dashboard.text import plain

LR_KEY = forms.KEY_PREFIX + "optim.lr"  # the optimizer's LR field in the builder
FIND_KEY = "builder_lr_find"  # id of the LR range test shown
USED_KEY = "builder_lr_find_used"  # id whose suggestion the user put into the LR field
STEPS_KEY = "builder_lr_find_steps"
DEFAULT_STEPS = 300  # a few hundred steps: enough for a smooth curve on most sets
MIN_STEPS, MAX_STEPS = 10, 2000


def steps_error(value) -> str | None:
    """Why the sweep length cannot be used, or None (said under the field, as the builder's numbers)."""
    if not isinstance(value, (int, float)) or value != int(value) or not MIN_STEPS <= value <= MAX_STEPS:
        return f"Sweep steps: a whole number from {MIN_STEPS} to {MAX_STEPS:,} (got {value})."
    return None


def _start(url: str) -> None:
    ss = st.session_state
    config, errors = forms.state_to_config(ss, ss.get("builder_config"))
    if errors:
        ss["builder_lr_find_notice"] = "Fix the highlighted fields first: the LR range test runs this config."
        return
    if steps_error(ss.get(STEPS_KEY, DEFAULT_STEPS)):
        return  # said under the field
    ss[FIND_KEY] = lr_find_jobs.start_lr_find(url, config, steps=int(ss.get(STEPS_KEY) or DEFAULT_STEPS))
    ss.pop(USED_KEY, None)


def _use(find_id: int, lr: float) -> None:
    st.session_state[LR_KEY] = float(lr)
    st.session_state[USED_KEY] = find_id


def render(url: str, config: dict, form_ok: bool = True) -> None:
    """The panel, under the optimizer's fields."""
    ss = st.session_state
    with st.container(border=True):
        st.markdown(
            "**Find the learning rate** — an LR range test: a short run from this config's initial weights "
            "while the LR grows exponentially, then a good LR is read off the loss curve."
        )
        c = st.columns([1, 1, 3], vertical_alignment="bottom")
        ss.setdefault(STEPS_KEY, DEFAULT_STEPS)
        # No min/max on the widget (a browser would snap a typed value back silently): the range is
        # said under the field instead. persist_state: the builder draws only the open tab's widgets.
        c[0].number_input(
            "Sweep steps",
            step=10,
            format="%d",
            key=STEPS_KEY,
            persist_state="session",
            help=f"Optimizer steps of the sweep (at most 5 passes over the training data). "
            f"Allowed: {MIN_STEPS} to {MAX_STEPS:,}.",
        )
        steps_problem = steps_error(ss.get(STEPS_KEY))
        c[1].button(
            "🔎 Find learning rate",
            key="builder_lr_find_start",
            on_click=_start,
            args=(url,),
            disabled=not form_ok or steps_problem is not None,
            width="stretch",
            help="Runs python -m engine lr-find on this config in its own process; keep editing meanwhile",
        )
        if steps_problem:
            c[0].error(steps_problem, icon="⚠️")
        if notice := ss.pop("builder_lr_find_notice", None):
            st.warning(notice)
        find_id = ss.get(FIND_KEY)
        if find_id is None:
            return
        row = lr_find_jobs.lr_find(url, int(find_id))
        if row is None:
            ss.pop(FIND_KEY, None)
            return
        if row["status"] in lr_find_jobs.UNFINISHED:
            _poll(url, int(find_id))
        else:
            _result(row, config)


def _poll(url: str, find_id: int) -> None:
    @st.fragment(run_every=1.0)
    def poll():
        row = lr_find_jobs.lr_find(url, find_id)
        if row is None or row["status"] not in lr_find_jobs.UNFINISHED:
            st.rerun()  # the whole page: the result is drawn with the form
        st.info(f"LR range test #{find_id} {row['status']} on {plain(row['model'])} · {plain(row['dataset'])} …")

    poll()


def _result(row: dict, config: dict) -> None:
    ss = st.session_state
    find_id, lr, rule = row["id"], row["suggested_lr"], row["rule"]
    if row["status"] == "failed" and not row["result"]:
        st.error(f"LR range test #{find_id} failed: {plain(row['error'] or 'no reason recorded')}")
        return
    result = row["result"] or {}
    current = forms.get_path(config, "optim.lr")
    st.plotly_chart(
        plots_diagnosis.lr_find_figure(result, lr, rule, current if isinstance(current, (int, float)) else None),
        key="builder_lr_find_chart",
    )
    steps = len(result.get("lrs") or [])
    end = "diverged (stopped early)" if result.get("diverged") else "finished"
    if lr is None:
        st.warning(
            f"LR range test #{find_id}: {plain(row['error'] or 'no suggestion')} — sweep {end} after {steps} steps."
        )
        return
    c = st.columns([3, 1], vertical_alignment="center")
    c[0].markdown(
        f"Suggested LR **{lr:.3g}** by the **{rule}** rule: {plots_diagnosis.LR_RULES.get(rule, rule)}. "
        f"Sweep {end} after {steps} steps, on {plain(row['model'])} · {plain(row['dataset'])} (test #{find_id})."
    )
    in_use = isinstance(current, (int, float)) and math.isclose(current, lr, rel_tol=1e-4)
    c[1].button(
        "✔ In use" if in_use else "Use this LR",
        key="builder_lr_find_use",
        on_click=_use,
        args=(find_id, lr),
        disabled=in_use,
        type="primary" if not in_use else "secondary",
        width="stretch",
        help="Put the suggestion into the optimizer's LR field; a run launched with it records the LR range test",
    )
    if ss.get(USED_KEY) == find_id and not in_use:
        st.caption("The LR field was changed after using the suggestion: a launch records no LR range test.")


def suggestion_fact(url: str, config: dict) -> dict | None:
    """{"lr_find": {...}} for a run launched with `config` when its LR is the suggestion of the test shown."""
    find_id = st.session_state.get(FIND_KEY)
    if find_id is None:
        return None
    row = lr_find_jobs.lr_find(url, int(find_id))
    lr = forms.get_path(config, "optim.lr")
    if row is None or row["suggested_lr"] is None or not isinstance(lr, (int, float)):
        return None
    if not math.isclose(float(lr), row["suggested_lr"], rel_tol=1e-4):
        return None
    return {"lr_find": {"id": int(find_id), "suggested_lr": row["suggested_lr"], "rule": row["rule"]}}


def on_launch(url: str, run_id: int, config: dict) -> None:
    """Record the LR range test with a run just launched from the builder, when its LR came from it."""
    from db import store

    if (fact := suggestion_fact(url, config)) is not None:
        store.merge_run_facts(url, run_id, fact)
