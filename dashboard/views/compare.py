"""Compare 2 to 10 runs: curves, config diff, best/final metrics, confusion matrices, per-class and TTA bars.

The runs come from ?runs=1,2,3, else the Runs page's selection (st.session_state["compare_ids"]), and
can be changed with the picker; the picker writes ?runs= back so the view is a shareable link.
Layout only: reads are dashboard.reads (cached db.queries), figures and tables are dashboard.plots_compare.
"""

import streamlit as st

from dashboard import plots_compare as pc
from dashboard import plots_diagnosis, reads, significance
from dashboard.state import db_url_for_session
from dashboard.text import plain
from dashboard.views import image_history
from db.models import ACTIVE

url = db_url_for_session()

st.title("Compare runs")

choices = reads.run_choices(url)
if choices.empty:
    st.info("No runs yet. Start one on the **New run** page, then come back to compare.")
    st.stop()
labels_all = {int(r.id): pc.run_label(int(r.id), r.name) + f" · {r.status} · {r.dataset}" for r in choices.itertuples()}

# Re-seed the picker when the URL or the Runs page's selection changes; otherwise it keeps the user's edits.
source = (tuple(st.query_params.get_all("runs")), tuple(st.session_state.get("compare_ids") or ()))
if "compare_select" not in st.session_state or st.session_state.get("_compare_source") != source:
    ids, notes = pc.initial_selection(source[0], source[1], labels_all)
    st.session_state["compare_select"] = ids
    for note in notes:
        st.warning(plain(note))

col_pick, col_refresh = st.columns([6, 1], vertical_alignment="bottom")
selected = col_pick.multiselect(
    f"Runs to compare ({pc.MIN_RUNS} to {pc.MAX_RUNS})",
    options=list(labels_all),
    format_func=labels_all.get,
    key="compare_select",
    max_selections=pc.MAX_RUNS,
    wrap=True,  # in a column the chips would stay on one scrolling row, the later ones cut off
)
if col_refresh.button("Refresh", help="Read the latest rows (live runs keep writing)"):
    st.cache_data.clear()
if selected:
    st.query_params["runs"] = ",".join(str(i) for i in selected)
elif "runs" in st.query_params:
    del st.query_params["runs"]
st.session_state["_compare_source"] = (tuple(st.query_params.get_all("runs")), source[1])

if len(selected) < pc.MIN_RUNS:
    st.info(f"Pick at least {pc.MIN_RUNS} runs above (or select them on the **Runs** page and press Compare).")
    st.stop()

ids = tuple(selected)
runs = reads.runs_with_configs(url, ids)
labels = {r["id"]: pc.run_label(r["id"], r["name"]) for r in runs}
datasets = {r["dataset"] for r in runs}
class_names = reads.dataset_class_names(url, next(iter(datasets))) if len(datasets) == 1 else []
if len(datasets) > 1:
    st.warning(
        f"These runs use different datasets ({plain(', '.join(sorted(datasets)))}): compare their numbers with care."
    )

# Lazy tabs: switching tab reruns the page and only the open one is computed, so the page paints
# quickly even with many runs and a live one training beside it.
tab_curves, tab_table, tab_diff, tab_confusion, tab_class, tab_tta, tab_sig, tab_ab = st.tabs(
    [
        "Curves",
        "Best / final",
        "Config diff",
        "Confusion matrices",
        "Per class",
        "TTA",
        "Is B better?",
        "A vs B images",
    ],
    key="compare_tab",
    on_change="rerun",
)


# ------------------------------------------------------------------------------------- curves
def _curves_tab(ids, labels, class_names):
    history = reads.histories(url, ids)
    if history.empty:
        st.info("No epochs recorded yet for these runs.")
    else:
        names = pc.metric_names(history)
        c1, c2, c3, c4 = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
        metric = c1.selectbox("Metric", names, index=0, key="compare_metric")
        splits_here = pc.splits_for(history, metric)
        splits = c2.multiselect("Splits", splits_here, default=splits_here, key="compare_splits")
        smooth = c3.toggle("Smooth (EMA)", key="compare_smooth")
        log_y = c4.toggle("Log y axis", key="compare_log")
        weight = st.slider("Smoothing weight", 0.0, 0.95, 0.6, 0.05, key="compare_weight") if smooth else 0.0
        st.plotly_chart(pc.curves_figure(history, metric, labels, splits, weight, log_y), key="compare_curves")
        st.caption(
            "Solid = train, dashed = val. Hover a point for its value" + (" (raw and smoothed)." if smooth else ".")
        )
        readings = plots_diagnosis.compare_readings(history, labels, f"val_{metric}")  # what each run's curves say
        st.markdown(
            "\n".join(f"- **{plain(labels[i])}**: {plots_diagnosis.reading_line(r)}" for i, r in readings.items()),
            help="★ best epoch, ✕ overfitting onset (engine.diagnose's rules on each run's train and val loss)",
        )


with tab_curves:
    if tab_curves.open:  # only the tab on screen is computed
        live = any(r["status"] in ACTIVE for r in runs)
        # A fragment: its widgets rerun only this part; while a run is live it also re-reads every 5 s.
        st.fragment(run_every=5 if live else None)(_curves_tab)(ids, labels, class_names)
        if live:
            st.caption("Live: curves refresh every 5 s while a selected run is queued or running.")

# ------------------------------------------------------------------------------------- best / final
with tab_table:
    if tab_table.open:  # only the tab on screen is computed
        table = pc.best_final_table(reads.latest_metrics(url, ids), labels)
        metrics = [m for m in pc.HEADLINE_METRICS if m in table and not table[m].isna().all()]
        if metrics:
            by = st.selectbox(
                "Best by",
                metrics,
                key="compare_best_by",
                help="Ties on this metric are broken by the next ones in this list, and the headline says so",
            )
            st.markdown(pc.best_headline(table, by, escape=plain))
        st.dataframe(
            table,
            placeholder="–",  # a missing value, not the word None
            key="compare_best_final",
            column_config={c: st.column_config.NumberColumn(format="%.4f") for c in table.columns if "epoch" not in c},
        )

# ------------------------------------------------------------------------------------- config diff
with tab_diff:
    if tab_diff.open:  # only the tab on screen is computed
        diff = pc.config_diff({labels[r["id"]]: r["config"] for r in runs})
        if diff.empty:
            st.success("The configs are identical: any difference in results comes from randomness.")
        else:
            st.caption(
                f"{len(diff)} field(s) differ; fields that are the same in every run are hidden. "
                f"'{pc.MISSING}' = the field is absent from that run's config."
            )
            st.dataframe(diff, key="compare_diff", placeholder="–")


# ------------------------------------------------------------------------------------- confusion
@st.fragment  # its widgets rerun only this part, not the whole page
def _confusion_tab(ids, labels, class_names):
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    which = c1.radio(
        "Matrices from", ["test: final evaluation", "val: last epoch"], horizontal=True, key="compare_cm_source"
    )
    normalize = c2.toggle("Normalise rows", value=True, key="compare_cm_norm")
    if which.startswith("test"):
        mats = {labels[i]: e["confusion"] for i, e in reads.final_evaluations(url, ids, "test").items() if i in labels}
    else:
        mats = {labels[i]: m for i, (_, m) in reads.last_confusions(url, ids, "val").items() if i in labels}
    mats = {lab: mats[lab] for lab in labels.values() if lab in mats}
    if not mats:
        st.info("No confusion matrices for these runs yet (the test one is written when a run finishes).")
    else:
        missing = [lab for lab in labels.values() if lab not in mats]
        if missing:
            st.caption(f"Not available for: {plain(', '.join(missing))}")
        st.plotly_chart(pc.confusion_grid_figure(mats, class_names, normalize), key="compare_cm_grid")
        if len(mats) >= 2:
            st.markdown("**Difference**")
            opts = list(mats)
            d1, d2 = st.columns(2)
            a = d1.selectbox("A", opts, index=0, key="compare_cm_a")
            b = d2.selectbox("B", opts, index=1, key="compare_cm_b")
            try:
                st.plotly_chart(
                    pc.confusion_difference_figure(mats[a], mats[b], a, b, class_names), key="compare_cm_diff"
                )
            except ValueError as exc:
                st.warning(plain(exc))


with tab_confusion:
    if tab_confusion.open:  # only the tab on screen is computed
        _confusion_tab(ids, labels, class_names)


# ------------------------------------------------------------------------------------- per class
BEST_CELL = "font-weight: bold; background-color: rgba(44, 160, 44, 0.18)"


@st.fragment  # its widgets rerun only this part, not the whole page
def _per_class_tab(ids, labels, class_names):
    evals = reads.final_evaluations(url, ids, "test")
    if not evals:
        st.info("No test evaluations yet: runs are evaluated on the test split when they finish.")
    else:
        label = st.radio("Per-class metric", list(pc.PER_CLASS_METRICS), horizontal=True, key="compare_pc_metric")
        per_class = {labels[i]: evals[i]["per_class"] for i in labels if i in evals}
        metric = pc.PER_CLASS_METRICS[label]
        st.plotly_chart(pc.per_class_figure(per_class, class_names, metric), key="compare_pc")
        table, is_best = pc.per_class_table(per_class, class_names, metric)
        if not table.empty:
            st.caption(f"Per class, {label}: each class's best run is highlighted and named in the *best* column.")
            st.dataframe(
                table.style.format({c: "{:.3f}" for c in is_best.columns}, na_rep="–").apply(
                    lambda col: [BEST_CELL if b else "" for b in is_best[col.name]], subset=list(is_best.columns)
                ),
                key="compare_pc_table",
            )


with tab_class:
    if tab_class.open:  # only the tab on screen is computed
        _per_class_tab(ids, labels, class_names)

# ------------------------------------------------------------------------------------- TTA
with tab_tta:
    if tab_tta.open:  # only the tab on screen is computed
        tta = reads.tta_of(url, ids)
        if tta.empty:
            st.info("None of these runs evaluated test-time augmentation. Add variants under eval.tta in the builder.")
        else:
            st.plotly_chart(pc.tta_figure(tta, labels), key="compare_tta")
            st.dataframe(
                pc.tta_table(tta, labels),
                placeholder="–",  # a missing value, not the word None
                key="compare_tta_table",
                column_config={c: st.column_config.NumberColumn(format="%.4f") for c in tta["variant"].unique()},
            )

# ------------------------------------------------------------------------------------- significance
with tab_sig:
    if tab_sig.open:  # only the tab on screen is computed
        st.fragment(significance.compare_tab)(url, runs, labels, reads.latest_metrics(url, ids))

# ------------------------------------------------------------------------------------- A vs B images
with tab_ab:
    if tab_ab.open:  # only the tab on screen is computed
        st.fragment(image_history.ab_tab)(url, runs, labels)
