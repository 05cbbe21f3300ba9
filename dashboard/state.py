"""Session-wide settings shared by the pages: the DB URL (from $LAB_DB_URL, else lab.db)."""

from __future__ import annotations

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
