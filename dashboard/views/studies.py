"""Studies: design an experiment as a set of runs, launch it, and read which setting matters and
whether the best configuration really beats the runner-up.

Layout only. The designer's widgets become a study file in dashboard.study_design; validation,
preview, launch and every number come from control.studies (the same code as `python -m engine
study ...`); figures are dashboard.plots_study; the significance panels are dashboard.significance.
?study=<id> opens a study.
"""

import pandas as pd
import streamlit as st

from control import studies
from control.presets import PRESETS
from dashboard import plots_study as ps
from dashboard import reads, significance
from dashboard import study_design as sd
from dashboard.state import db_url_for_session
from dashboard.text import plain
from db import queries

url = db_url_for_session()
ss = st.session_state

st.title("Studies")
st.caption(
    "A study runs every configuration of a few factors several times (seeds) and answers with means, "
    "confidence intervals and significance tests instead of single runs."
)

existing = reads.studies_list(url)
if (launched := ss.pop("study_launched", None)) is not None:
    ss["study_open"], ss["study_mode"] = launched, "Open a study"
if "study" in st.query_params and str(st.query_params["study"]).isdigit():
    ss.setdefault("study_open", int(st.query_params["study"]))
    ss.setdefault("study_mode", "Open a study")
mode = st.radio(
    "View", ["Design a new study", "Open a study"], horizontal=True, key="study_mode", label_visibility="collapsed"
)


# ------------------------------------------------------------------------------- design
def _factor_row(i: int, choices: list[str]) -> dict:
    defaults = ["optim.lr", "optim.weight_decay", "train.batch_size", "optim.name"]
    c = st.columns([3, 1.4, 4], vertical_alignment="bottom")
    default = defaults[i] if i < len(defaults) and defaults[i] in choices else choices[0]
    path = c[0].selectbox(
        f"Factor {i + 1}: config field", choices, index=choices.index(default), key=f"study_f{i}_path"
    )
    kind = c[1].selectbox(
        "Kind",
        sd.KINDS,
        key=f"study_f{i}_kind",
        help="levels: a list (any strategy); uniform / log / int: a range (random or TPE)",
    )
    row = {"path": path, "kind": kind}
    spec = sd.spec_for(path)
    if kind == "levels" and spec is not None and spec.kind == "choice":
        row["choices"] = c[2].multiselect("Levels", list(spec.options), key=f"study_f{i}_choices")
    elif kind == "levels":
        row["levels"] = c[2].text_input(
            "Levels (comma-separated)", key=f"study_f{i}_levels", placeholder="e.g. 0.001, 0.01, 0.1"
        )
    else:
        lo, hi = c[2].columns(2)
        row["low"] = lo.number_input("Low", value=None, format="%g", key=f"study_f{i}_low")
        row["high"] = hi.number_input("High", value=None, format="%g", key=f"study_f{i}_high")
    return row


def _design() -> None:
    st.subheader("1 · Start from")
    source = st.radio("Base config", sd.BASE_SOURCES, horizontal=True, key="study_base_source")
    run_id = preset = dataset = None
    if source == "Preset":
        c = st.columns(2)
        preset = c[0].selectbox("Preset", list(PRESETS), key="study_preset", format_func=lambda p: p)
        dataset = c[1].selectbox("Dataset", reads.dataset_names(url) or ["digits"], key="study_preset_dataset")
    elif source == "Past run":
        choices = reads.run_choices(url)
        ids = [int(i) for i in choices["id"]] if not choices.empty else []
        names = {int(r.id): f"#{r.id} {r.name} · {r.status}" for r in choices.itertuples()}
        run_id = st.selectbox("Run", ids, format_func=names.get, key="study_base_run")
    elif "builder_config" not in ss:
        st.caption("The builder has not been opened in this session: its defaults are used.")
    base = sd.base_entry(source, ss.get("builder_config"), preset, dataset, run_id)

    st.subheader("2 · Factors")
    kfold = None
    if st.radio("Study", sd.KINDS_OF_STUDY, horizontal=True, key="study_kind") == "K-fold ensemble":
        kfold = st.number_input("K (folds)", 2, 20, 5, key="study_kfold", help=KFOLD_HELP)
        rows = []
    else:
        n = st.number_input("How many factors", 1, 4, 2, key="study_n_factors")
        choices = sd.factor_choices()
        rows = [_factor_row(i, choices) for i in range(int(n))]

    st.subheader("3 · Runs")
    if kfold is not None:
        st.caption(
            "A K-fold study trains each fold once (one seed, every fold): seeds, strategy, budget and pruning are not used."
        )
    c = st.columns(4)
    repeats = c[0].number_input("Seeds per configuration", 1, 20, 3, key="study_repeats", disabled=kfold is not None)
    strategy = c[1].selectbox(
        "Strategy",
        ["grid", "random", "tpe"],
        key="study_strategy",
        format_func={"grid": "full grid", "random": "random", "tpe": "TPE (Optuna)"}.get,
        disabled=kfold is not None,
    )
    trials = c[2].number_input(
        "Budget: configurations",
        min_value=1,
        value=None,
        key="study_budget_trials",
        help="random / TPE: how many configurations to try (grid: all, or at most this)",
        disabled=kfold is not None,
    )
    epochs = c[3].number_input(
        "Budget: total epochs", min_value=1, value=None, key="study_budget_epochs", disabled=kfold is not None
    )
    c = st.columns(4)
    metric = c[0].selectbox("Objective", list(sd.OBJECTIVES), format_func=sd.OBJECTIVES.get, key="study_metric")
    direction = c[1].selectbox(
        "Direction", ["maximize", "minimize"], index=1 if metric == "val_loss" else 0, key=f"study_direction_{metric}"
    )
    pruner = c[2].selectbox(
        "Early pruning",
        ["none", "median", "halving"],
        key="study_pruner",
        format_func={"none": "none", "median": "median pruner", "halving": "successive halving"}.get,
        disabled=kfold is not None,
    )
    name = c[3].text_input("Name", key="study_name", placeholder="e.g. lr x weight decay")

    study, errors = sd.build_study(
        name=name,
        base=base,
        factors=rows,
        repeats=repeats,
        strategy=strategy,
        trials=trials,
        epochs=epochs,
        metric=metric,
        direction=direction,
        pruner=pruner,
        kfold=kfold,
    )
    b = st.columns([1, 1, 1, 3])
    preview = b[0].button("Preview", key="study_preview", width="stretch")
    launch = b[1].button("Launch study", type="primary", key="study_launch", width="stretch")
    b[2].download_button(
        "Study YAML", sd.study_file_text(study), file_name="study.yaml", key="study_download", width="stretch"
    )
    if not (preview or launch):
        return
    spec = resolved = None
    if not errors:
        spec, resolved, errors = studies.load_study(study, url)
    if errors:
        st.error(
            "Nothing was queued. Fix these fields:\n\n" + "\n".join(f"- **{plain(f)}**: {plain(m)}" for f, m in errors)
        )
        return
    p = studies.preview(spec, resolved)
    c = st.columns(3)
    c[0].metric("Configurations", p["configs"])
    c[1].metric("Runs", p["runs"], help=f"{p['repeats']} seeds each")
    c[2].metric("Epochs in all", p["epochs"])
    st.dataframe(pd.DataFrame(p["table"]), hide_index=True, key="study_preview_table")
    if launch:
        study_id = studies.create_study(url, spec, resolved)
        reads.studies_list.clear()
        ss["study_launched"] = study_id  # opened at the top of the next run, before its widgets exist
        st.query_params["study"] = str(study_id)
        st.rerun()


# ------------------------------------------------------------------------------- results
def _fingerprint(study_id: int) -> tuple:
    """What the cached reads are keyed on: the study's status and each trial's (status, epochs done)."""
    return queries.get_study(url, study_id)["status"], queries.study_progress(url, study_id)


def _open() -> None:
    if not existing:
        st.info("No studies yet: design one above (Design a new study).")
        return
    labels = {s["id"]: f"#{s['id']} {s['name']} · {s['status']}" for s in existing}
    if ss.get("study_open") not in labels:
        ss["study_open"] = existing[0]["id"]
    study_id = st.selectbox("Study", list(labels), format_func=labels.get, key="study_open")
    st.query_params["study"] = str(study_id)
    fingerprint = _fingerprint(study_id)
    state = reads.study_state(url, study_id, fingerprint)
    listed = next(s["status"] for s in existing if s["id"] == study_id)
    if listed != state["status"] and ss.get("study_relabelled") != (study_id, state["status"]):
        ss["study_relabelled"] = (study_id, state["status"])  # once per change: the picker's label is cached
        reads.studies_list.clear()
        st.rerun()
    live = state["status"] in ("running", "ensembling")

    @st.fragment(run_every=3 if live else None)
    def live_progress():
        if live:
            studies.advance(url, study_id)  # the page moves the study on: results told, lost trials noticed
        if _fingerprint(study_id) != fingerprint:
            reads.studies_list.clear()  # the picker's labels carry the status
            st.rerun()
        share, text = ps.progress_counts(state["counts"], state["planned_runs"])
        st.progress(min(1.0, share), text=text)

    live_progress()
    _header(study_id, state)
    _kfold(state)
    if not state["summary"]:
        st.info("No trial has finished yet: the results fill in as they do.")
        st.dataframe(ps.trials_table(state["trials"], state["factors"]), hide_index=True, key="study_trials")
        return
    _results(study_id, state, fingerprint)


def _header(study_id: int, state: dict) -> None:
    obj = state["objective"]
    c = st.columns([2, 2, 1, 1, 1])
    best = state["best"]
    c[0].metric(
        f"Best so far ({sd.OBJECTIVES[obj['metric']]}, {obj['direction']})",
        "—" if best is None else f"{best['mean']:.4f}",
        help=None if best is None else ps.params_label(best["params"]) + f" · n = {best['n']}",
    )
    c[1].metric("Status", f"{state['status']} · {state['strategy']}")
    kfold_unfinished = state["kfold"] is not None and state["kfold"]["ensemble"] is None
    if state["status"] in ("running", "ensembling"):
        if c[2].button("Stop study", key="study_stop", width="stretch"):
            studies.stop_study(url, study_id)
            st.rerun()
    elif (state["status"] == "stopped" or kfold_unfinished) and c[2].button(
        "Resume study", key="study_resume", width="stretch"
    ):
        studies.resume_study(url, study_id)
        st.rerun()
    if best is not None and c[3].button(
        "Clone best", key="study_clone_best", width="stretch", help="Open the builder with the best configuration"
    ):
        st.switch_page("views/new_run.py", query_params={"clone": str(best["run_ids"][0])})
    c[4].download_button(
        "Study YAML",
        studies.study_yaml(url, study_id),
        file_name=f"study_{study_id}.yaml",
        key="study_yaml",
        width="stretch",
    )


KFOLD_HELP = (
    "The trials are the K folds of the base config (data.kfold = K, data.fold = 0 .. K-1, one seed); when "
    "the last fold ends they are tested together as one ensemble (mean and majority vote of their "
    "class probabilities on the test set), recorded as a run of its own."
)


def _kfold(state: dict) -> None:
    """A K-fold study: the ensemble's test accuracy (mean, vote) beside each fold's own, and its run."""
    from control.study_kfold import summary_line

    kf = state["kfold"]
    if kf is None:
        return
    ens = kf["ensemble"]
    st.subheader(f"{kf['k']}-fold ensemble")
    c = st.columns([1, 1, 1])
    c[0].metric("Ensemble test accuracy (mean)", "—" if ens is None else f"{ens['mean_accuracy']:.4f}")
    c[1].metric("Ensemble test accuracy (vote)", "—" if ens is None else f"{ens['vote_accuracy']:.4f}")
    if ens is not None:
        c[2].page_link(
            "views/run_detail.py",
            label=f"Open the ensemble, run #{ens['run_id']}",
            query_params={"run": str(ens["run_id"])},
        )
    else:
        (st.warning if state["status"] not in ("running", "ensembling") else st.info)(
            plain(summary_line(kf, state["status"]))
        )
    folds = [
        {
            "fold": f"{row['fold'] + 1}/{kf['k']}",
            "run": row["run_id"],
            "status": row["status"] or "not queued",
            "test accuracy": row["test_accuracy"],
        }
        for row in kf["folds"]
    ]
    if ens is not None:
        folds.append(
            {"fold": "ensemble (mean)", "run": ens["run_id"], "status": "done", "test accuracy": ens["mean_accuracy"]}
        )
        folds.append(
            {"fold": "ensemble (vote)", "run": ens["run_id"], "status": "done", "test accuracy": ens["vote_accuracy"]}
        )
    st.dataframe(pd.DataFrame(folds), hide_index=True, key="study_kfold_folds")


def _results(study_id: int, state: dict, fingerprint: tuple) -> None:
    factors, metric = state["factors"], state["objective"]["metric"]
    st.subheader("Configurations, seeds pooled")
    st.dataframe(ps.summary_table(state["summary"], factors), hide_index=True, key="study_summary")

    st.subheader("Which factor matters")
    cols = st.columns(min(3, len(factors)))
    for i, f in enumerate(factors):
        cols[i % len(cols)].plotly_chart(ps.main_effect_figure(state["trials"], f, metric), key=f"study_effect_{i}")
    if len(factors) >= 2:
        c = st.columns(2)
        a = c[0].selectbox("Interaction: rows", factors, index=0, key="study_ix_a")
        b = c[1].selectbox("Interaction: columns", [f for f in factors if f != a], index=0, key="study_ix_b")
        st.plotly_chart(ps.interaction_figure(state["trials"], a, b, metric), key="study_interaction")
    n_done = state["counts"].get("done", 0)
    importance = reads.study_importance(url, study_id, n_done) if n_done >= 3 else {}
    c = st.columns([3, 2])
    c[0].plotly_chart(ps.parallel_coordinates_figure(state["trials"], factors, metric), key="study_parcoords")
    if importance:
        c[1].plotly_chart(ps.importance_figure(importance), key="study_importance")
    else:
        c[1].caption("Parameter importance (fANOVA) appears once a few trials have finished.")

    st.subheader("Learning curves, mean ± std over seeds")
    curve = st.selectbox("Curve", ["val acc", "val loss", "train acc", "train loss"], key="study_curve")
    history = reads.study_curves(url, study_id, *curve.split(), fingerprint)
    st.plotly_chart(ps.seed_bands_figure(ps.seed_bands(history, state["trials"]), curve), key="study_bands")

    _significance(state)
    with st.expander("Every trial"):
        st.dataframe(ps.trials_table(state["trials"], factors), hide_index=True, key="study_trials")


def _significance(state: dict) -> None:
    st.subheader("Is B better than A?")
    summary = state["summary"]
    by_run = {t["run_id"]: t["objective"] for t in state["trials"]}
    kind = st.radio(
        "Compare", ["two configurations (seeds)", "two runs (McNemar)"], horizontal=True, key="study_sig_kind"
    )
    if kind.startswith("two configurations"):
        if len(summary) < 2:
            st.info("Two configurations need to have finished runs.")
            return
        labels = {i: f"#{i} {ps.params_label(g['params'])} (n={g['n']})" for i, g in enumerate(summary)}
        c = st.columns(2)
        a = c[0].selectbox("A", list(labels), index=1, format_func=labels.get, key="study_sig_a")
        b = c[1].selectbox("B", list(labels), index=0, format_func=labels.get, key="study_sig_b")
        significance.groups_panel(  # named by their settings too: the sentence reads on its own
            [by_run[r] for r in summary[a]["run_ids"]],
            [by_run[r] for r in summary[b]["run_ids"]],
            f"#{a} ({ps.params_label(summary[a]['params'])})",
            f"#{b} ({ps.params_label(summary[b]['params'])})",
            higher_is_better=state["objective"]["direction"] == "maximize",
            key="study_sig",
        )
    else:
        done = [t["run_id"] for t in state["trials"] if t["objective"] is not None]
        if len(done) < 2:
            st.info("Two runs need to have finished.")
            return
        c = st.columns(2)
        ra = c[0].selectbox("Run A", done, index=1, key="study_sig_ra")
        rb = c[1].selectbox("Run B", done, index=0, key="study_sig_rb")
        significance.runs_panel(url, ra, rb)


if mode == "Design a new study":
    _design()
else:
    _open()
