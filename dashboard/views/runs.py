"""Runs: every run with its status and headline metrics; select runs to compare, open, stop, resume,
clone, delete or annotate them.

Layout only: the table is db.queries.list_runs (runs + latest_metrics, never the metric history)
shaped by dashboard.plots.runs_table; filters are dashboard.forms.filter_runs; actions are
control.launcher / db.store calls. The Compare page reads st.session_state["compare_ids"] (and ?runs=).
"""

import streamlit as st

from control import launcher
from dashboard import forms, plots, reads
from dashboard.state import db_url_for_session
from db import store
from db.models import ACTIVE, FINAL, RESUMABLE, RunStatus

url = db_url_for_session()
ss = st.session_state

# Runs whose process died are marked lost, and queued runs get a free slot, whenever the page loads.
if launcher.refresh_lost(url) or launcher.start_queued(url):
    reads.runs.clear()

st.title("Runs")
runs = reads.runs(url)
if runs.empty:
    st.info("No runs yet — start one on **New run**.")
    st.page_link("views/new_run.py", label="Start a run", icon="🧪")
    st.stop()

if notice := ss.pop("runs_notice", None):
    st.toast(notice)

# ------------------------------------------------------------------------------- filters
f = st.columns([2, 2, 2, 3])
statuses = f[0].multiselect(
    "Status", sorted(runs["status"].unique()), key="runs_status", persist_state="session", placeholder="all"
)
datasets = f[1].multiselect(
    "Dataset", sorted(runs["dataset"].dropna().unique()), key="runs_dataset", persist_state="session", placeholder="all"
)
all_tags = sorted({t for tags in runs["tags"] for t in (tags or [])})
tags = f[2].multiselect(
    "Tags", all_tags, key="runs_tags", persist_state="session", placeholder="any", disabled=not all_tags
)
text = f[3].text_input("Search", key="runs_search", placeholder="name, model, notes, id …", persist_state="session")

# Pixel widths that keep every column inside a 1400 px window with the sidebar open (the status, which
# carries a running run's live phase, gets the room; a cell's full text shows on hover, and any column
# can be dragged wider).
WIDTHS = {  # 900 px in all: with the selection column, inside the 938 px a 1400 px window leaves the table
    "id": 34,
    "name": 68,
    "status": 230,
    "dataset": 56,
    "model": 68,
    "best_val_acc": 52,
    "test_acc": 46,
    "epochs": 46,
    "duration_min": 48,
    "where": 74,
    "tags": 58,
    "notes": 40,
    "created_at": 80,
}
COLUMNS = {
    "id": st.column_config.NumberColumn("ID", format="%d", width=WIDTHS["id"]),
    "name": st.column_config.TextColumn("Name", width=WIDTHS["name"]),
    "status": st.column_config.TextColumn(
        "Status", width=WIDTHS["status"], help="A running run's phase: epoch and share, or the final evaluation"
    ),
    "dataset": st.column_config.TextColumn("Dataset", width=WIDTHS["dataset"]),
    "model": st.column_config.TextColumn("Model", width=WIDTHS["model"]),
    "best_val_acc": st.column_config.NumberColumn(
        "Best val",
        format="percent",
        width=WIDTHS["best_val_acc"],
        help="Best validation accuracy over the epochs so far",
    ),
    "test_acc": st.column_config.NumberColumn(
        "Test", format="percent", width=WIDTHS["test_acc"], help="Final test accuracy"
    ),
    "epochs": st.column_config.TextColumn("Epochs", width=WIDTHS["epochs"], help="done / planned"),
    "duration_min": st.column_config.NumberColumn("Time", format="%.0f min", width=WIDTHS["duration_min"]),
    "where": st.column_config.TextColumn("Where", width=WIDTHS["where"], help="launcher backend · host · device"),
    "tags": st.column_config.ListColumn("Tags", width=WIDTHS["tags"]),
    "notes": st.column_config.TextColumn("Notes", width=WIDTHS["notes"]),
    "created_at": st.column_config.DatetimeColumn(
        "Created", format="MM-DD HH:mm", width=WIDTHS["created_at"], help="UTC"
    ),
}


# ------------------------------------------------------------------------------- actions
def _go(page: str, **params):
    st.switch_page(page, query_params={k: str(v) for k, v in params.items()})


def _compare(ids):
    ss["compare_ids"] = list(ids)
    _go("views/compare.py", runs=",".join(str(i) for i in ids))


def _done(notice: str):
    """After an action on runs: fresh reads, a notice on the next run of the page."""
    reads.clear_run_caches()
    ss["runs_notice"] = notice
    st.rerun()


def _stop(ids):
    with st.spinner("Stopping…"):
        done = {i: launcher.stop_run(url, i) for i in ids}
    _done("; ".join(f"#{i}: {s}" for i, s in done.items()))


def _resume(ids):
    for i in ids:
        launcher.resume_run(url, i)
    _done(f"Resuming {', '.join(f'#{i}' for i in ids)}")


def _delete(ids):
    for i in ids:
        store.delete_run(url, i)
    _done(f"Deleted {', '.join(f'#{i}' for i in ids)}")


def _save_tags(run_id):
    store.set_tags_notes(url, run_id, forms.parse_tags(ss[f"runs_edit_tags_{run_id}"]), ss[f"runs_edit_notes_{run_id}"])
    reads.clear_run_caches()
    ss["runs_notice"] = f"Saved tags and notes of #{run_id}"


def _action_bar(selected, fresh):
    ids = [int(i) for i in selected["id"]]
    status = dict(zip(ids, fresh.set_index("id").loc[ids, "status"])) if ids else {}
    active = [i for i in ids if status[i] in ACTIVE]
    resumable = [i for i in ids if status[i] in RESUMABLE]
    final = [i for i in ids if status[i] in FINAL]
    one = len(ids) == 1
    st.caption(
        f"{len(ids)} selected"
        + (
            f": {', '.join(f'#{i}' for i in ids)}"
            if ids
            else " — tick the boxes at the left of the table to act on runs"
        )
    )
    b = st.columns(6)
    if b[0].button(
        f"📊 Compare ({len(ids)})",
        disabled=not 2 <= len(ids) <= 10,
        type="primary",
        width="stretch",
        help="Select 2 to 10 runs",
    ):
        _compare(ids)
    if b[1].button("🔎 Open", disabled=not one, width="stretch", help="Curves, confusion matrix, errors, TTA"):
        _go("views/run_detail.py", run=ids[0])
    if b[2].button("🧬 Clone and edit", disabled=not one, width="stretch", help="Open the builder prefilled"):
        _go("views/new_run.py", clone=ids[0])
    if b[3].button("⏹ Stop", disabled=not active, width="stretch", help="Stop the selected queued/running runs"):
        _stop(active)
    if b[4].button(
        "▶ Resume",
        disabled=not resumable,
        width="stretch",
        help="Continue stopped, failed or lost runs from their last checkpoint",
    ):
        _resume(resumable)
    with b[5].popover(
        "🗑 Delete",
        disabled=not final,
        width="stretch",
        help="Delete finished runs and their rows (running runs must be stopped first)",
    ):
        st.write(f"Delete {', '.join(f'#{i}' for i in final)} and all their metrics?")
        if st.button("Delete permanently", type="primary", key="runs_confirm_delete"):
            _delete(final)
    if one:
        row = fresh.set_index("id").loc[ids[0]]
        with st.expander(f"Tags and notes of #{ids[0]}"):
            st.text_input(
                "Tags", value=", ".join(row["tags"] or []), key=f"runs_edit_tags_{ids[0]}", help="Comma-separated"
            )
            st.text_area("Notes", value=row["notes"] or "", key=f"runs_edit_notes_{ids[0]}")
            st.button("Save", key=f"runs_save_{ids[0]}", on_click=_save_tags, args=(ids[0],))


# ------------------------------------------------------------------------------- table (live)
active_now = bool(runs["status"].isin(ACTIVE).any())


@st.fragment(run_every=3 if active_now else None)
def runs_table():
    fresh = reads.runs(url)
    view = forms.filter_runs(fresh, statuses, datasets, text, tags)
    counts = fresh["status"].value_counts()
    m = st.columns(5)
    m[0].metric("Runs", len(fresh))
    m[1].metric("Running", int(counts.get(RunStatus.RUNNING, 0)))
    m[2].metric("Queued", int(counts.get(RunStatus.QUEUED, 0)))
    m[3].metric("Completed", int(counts.get(RunStatus.COMPLETED, 0)))
    best = fresh["test_acc"].max()
    m[4].metric("Best test acc", plots.format_pct(best))
    table = plots.runs_table(view)
    if table.empty:
        st.info("No run matches these filters.")
        return
    event = st.dataframe(
        table,
        placeholder="–",  # a missing value, not the word None
        key="runs_table",
        on_select="rerun",
        selection_mode="multi-row",
        hide_index=True,
        column_config=COLUMNS,
        width="stretch",
        height=min(600, 38 + 35 * len(table)),
    )
    _action_bar(table.iloc[list(event.selection.rows)], fresh)
    if active_now and not fresh["status"].isin(ACTIVE).any():
        st.rerun()  # the last active run ended: stop polling


runs_table()
st.caption("Click a column header to sort. Live: the table refreshes every 3 s while runs are queued or running.")
