"""A confusion matrix whose cells pick a (true, predicted) pair of classes, beside two pickers that show
and change the same pair: what the test-set and the validation galleries of Run detail open from."""

from __future__ import annotations

import streamlit as st

from dashboard import plots


def confusion_picker(
    matrix,
    names: list[str],
    *,
    title: str,
    caption: str,
    keys: tuple[str, str, str],
    normalise: bool = False,
    normalise_key: str | None = None,
):
    """Draws the clickable matrix on the left (with a "Normalise rows" toggle first when `normalise_key`
    is given) and the two pickers on the right; the pair starts at the most confused cell. Returns
    (the right column, true class, predicted class), a class being None for "any"."""
    ss = st.session_state
    tkey, pkey, chart_key = keys
    if tkey not in ss:
        worst = plots.top_confusions(matrix, names, 1)
        ss[tkey], ss[pkey] = (worst[0][0], worst[0][1]) if worst else (None, None)

    def _on_cell():
        cell = plots.cell_from_selection(ss[chart_key].selection, names)
        if cell is not None:
            ss[tkey], ss[pkey] = cell

    left, right = st.columns([1, 1])
    with left:
        if normalise_key is not None:
            normalise = st.toggle("Normalise rows", key=normalise_key)
        st.plotly_chart(
            plots.confusion_figure(matrix, names, normalise=normalise, title=title),
            key=chart_key,
            on_select=_on_cell,
            selection_mode="points",
        )
        st.caption(caption)
    with right:
        options = [None] + list(range(len(matrix)))
        fmt = lambda i: "any" if i is None else f"{i}: {names[i]}"  # noqa: E731
        c = st.columns(2)
        true_c = c[0].selectbox("True class", options, key=tkey, format_func=fmt)
        pred_c = c[1].selectbox("Predicted class", options, key=pkey, format_func=fmt)
    return right, true_c, pred_c
