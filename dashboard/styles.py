"""Page-wide CSS the widgets have no parameter for, applied once by the entry script (app.py).

Image lists (st.image with several images: error galleries, sample grids) lay their tiles out in a
wrapping row with a row gap only: side by side, the tiles touch and their captions run into each other.
The rule below gives them a column gap and smaller, tighter captions."""

from __future__ import annotations

import streamlit as st

CSS = """
[data-testid="stImage"] { column-gap: 0.9rem; }
[data-testid="stImageCaption"] { font-size: 0.72rem; line-height: 1.25; }
"""


def apply() -> None:
    st.html(f"<style>{CSS}</style>")  # style only: Streamlit adds it without taking room on the page
