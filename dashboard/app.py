"""Entry script: `streamlit run dashboard/app.py`. One file per page under dashboard/views/
(not "pages/": that name switches Streamlit to its old folder-based navigation, which breaks deep links
on a freshly started server).

pandas and plotly are imported here, at the top of the entry script, before any page: on a cold
server a page importing plotly.express first can hit a partially initialised pandas.
"""

import sys
from pathlib import Path

import pandas  # noqa: F401  (see module docstring)
import plotly.express  # noqa: F401
import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard import styles  # noqa: E402
from dashboard.state import db_url_for_session, freeze_long_lived_objects  # noqa: E402

st.set_page_config(page_title="Image Classifier Lab", page_icon="🧪", layout="wide")
styles.apply()  # gaps between gallery tiles and their captions
db_url_for_session()

PAGES = Path(__file__).resolve().parent / "views"
nav = st.navigation(
    [
        st.Page(PAGES / "new_run.py", title="New run", icon="🧪", url_path="new_run"),
        st.Page(PAGES / "runs.py", title="Runs", icon="📋", default=True),  # the default page is served at "/"
        st.Page(PAGES / "run_detail.py", title="Run detail", icon="🔎", url_path="run"),
        st.Page(PAGES / "compare.py", title="Compare", icon="📊", url_path="compare"),
        st.Page(PAGES / "studies.py", title="Studies", icon="🧮", url_path="studies"),
        st.Page(PAGES / "augmentations.py", title="Augmentations", icon="🎨", url_path="augmentations"),
        st.Page(PAGES / "datasets.py", title="Datasets", icon="🗂️", url_path="datasets"),
    ]
)
nav.run()
freeze_long_lived_objects()  # once, after the first page has imported what pages need
