"""Layout: side-by-side confusion grids whose labels and titles keep clear of their neighbours, a Runs
table that fits a 1400 px window, Compare's run chips that wrap instead of being cut off, gallery tiles
with a gap, and a Datasets row that says "not computed" (with a button) instead of blanks."""

from __future__ import annotations

import json

import numpy as np

from dashboard import plots_compare as pc
from dashboard.text import plain
from db import queries, store
from tests.lifecycle_support import fast_digits
from tests.test_pages_core import button, open_page

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_confusion_grid_keeps_row_labels_off_the_neighbour_and_titles_off_the_axis_above():
    rng = np.random.default_rng(0)
    mats = {f"#{i} run": rng.integers(0, 50, (10, 10)).tolist() for i in range(1, 5)}  # 2 rows of 3
    fig = pc.confusion_grid_figure(mats, FASHION, cols=3)
    lay = fig.layout
    ys = [lay[f"yaxis{k}"] for k in ("", "2", "3", "4")]
    # the same classes label the rows of every panel: named once, at the first column of each grid row
    assert [bool(y.showticklabels) for y in ys] == [True, False, False, True]
    assert all(lay[f"xaxis{k}"].tickangle == -45 for k in ("", "2", "3", "4"))  # long names slanted
    # between the rows: room in pixels for the slanted tick labels, "predicted" and the next title
    plot_px = lay.height - lay.margin.t - lay.margin.b
    gap_px = (ys[0].domain[0] - ys[3].domain[1]) * plot_px
    assert gap_px >= 120, gap_px
    title_row2 = next(a for a in lay.annotations if a.text == "<b>#4 run</b>")
    assert title_row2.y == ys[3].domain[1] and title_row2.yanchor == "bottom"  # above its own panel
    short = pc.confusion_grid_figure({"a": [[1, 0], [0, 1]], "b": [[1, 0], [0, 1]]}, ["0", "1"])
    assert short.layout.xaxis.tickangle == 0  # digits stay upright


def test_runs_table_columns_fit_a_1400px_window(db_url, tiny):
    store.create_run(db_url, tiny(), name="a run with a long name", tags=["baseline", "fashion"])
    at = open_page("runs")
    cols = json.loads(at.dataframe[0].proto.columns)
    widths = {k: c.get("width") for k, c in cols.items() if not c.get("hidden")}
    assert all(isinstance(w, int) for w in widths.values()), widths
    # measured in Chromium: a 1400 px window with the sidebar open leaves the table 938 px; the
    # selection column takes about 33 of them
    assert sum(widths.values()) + 33 <= 938, sum(widths.values())
    assert widths["status"] >= 220  # the status carries a running run's phase


def test_compare_picker_chips_wrap(db_url, tiny):
    a, b = (store.create_run(db_url, tiny(), name=f"run number {i} with a long name") for i in (1, 2))
    at = open_page("compare", runs=f"{a},{b}")
    picker = next(m for m in at.multiselect if m.key == "compare_select")
    assert picker.proto.wrap is True and picker.value == [a, b]


def test_gallery_tiles_get_a_gap():
    from dashboard import styles

    assert "column-gap" in styles.CSS and "stImage" in styles.CSS


def test_datasets_row_without_stats_says_so_and_a_button_computes_them(db_url):
    name = fast_digits(db_url)  # registered without a summary, like the built-ins at start-up
    row = pc.datasets_table(queries.list_datasets(db_url)).set_index("name").loc[name]
    assert row["stats"] == "not computed"
    at = open_page("datasets")
    missing = [d["name"] for d in queries.list_datasets(db_url) if d["summary"] is None]
    assert missing  # the page summarises the dataset it shows by itself; the others wait for the button
    button(at, f"Compute statistics of {plain(', '.join(missing))}").click().run()  # the label is markdown
    assert not at.exception
    assert all(d["summary"] for d in queries.list_datasets(db_url))
    table = pc.datasets_table(queries.list_datasets(db_url))
    assert set(table["stats"]) == {"computed"} and table["classes"].notna().all()
