"""Session-wide settings shared by the pages: the DB URL (from $LAB_DB_URL, else lab.db)."""

from __future__ import annotations

import gc

import streamlit as st

from db.session import db_url


@st.cache_resource
def _bootstrapped(url: str) -> str:
    from control.launcher import bootstrap

    return bootstrap(url)


def db_url_for_session() -> str:
    from db.session import DatabaseCorrupt

    url = db_url()
    try:
        _bootstrapped(url)
    except DatabaseCorrupt as exc:  # one line on every page instead of a traceback
        st.error(str(exc))
        st.stop()
    st.session_state.setdefault("db_url", url)
    return url


_frozen = False


def freeze_long_lived_objects() -> None:
    """After the server's first page run, move everything alive (the imported libraries: Streamlit,
    plotly, pandas, SQLAlchemy, the pages' modules) out of the garbage collector's sight. A full
    collection otherwise walks those millions of objects again and again, adding a few hundred ms to
    whichever click happens to trigger it. Once per process: garbage is collected first, and objects made
    later are collected as usual."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
