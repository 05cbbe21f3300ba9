"""Figure and table builders of the Runs / Run detail pages (on a real engine run: test_pages_core.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard import plots
from db.models import RunStatus


def test_confusion_figure_counts_shares_and_clickable_cells():
    m = [[8, 2, 0], [1, 9, 0], [0, 0, 0]]
    fig = plots.confusion_figure(m, ["cat", "dog", "eel"], normalise=True)
    heat, cells = fig.data
    assert np.allclose(heat.z, [[0.8, 0.2, 0], [0.1, 0.9, 0], [0, 0, 0]])  # an empty row stays 0, no NaN
    assert heat.text[0][1] == "20%" and heat.text[2][2] == ""
    assert len(cells.x) == 9 and list(cells.customdata[1]) == [2, 0.2, 0, 1]  # true cat, predicted dog
    counts = plots.confusion_figure(m, ["cat", "dog", "eel"], normalise=False).data[0]
    assert counts.text[0][0] == "8" and np.array_equal(counts.z, np.array(m, dtype=float))


def test_a_click_on_a_cell_selects_true_and_predicted_class():
    # the shape Streamlit returns for a click in a real browser (customdata comes back as a mapping)
    browser = {
        "points": [
            {"curve_number": 1, "point_index": 5, "x": "c", "y": "b", "customdata": {"0": 2, "1": 0.25, "2": 1, "3": 2}}
        ]
    }
    assert plots.cell_from_selection(browser, ["a", "b", "c"]) == (1, 2)
    assert plots.cell_from_selection({"points": [{"x": "a", "y": "c"}]}, ["a", "b", "c"]) == (2, 0)
    assert plots.cell_from_selection({"points": []}, ["a"]) is None
    assert plots.top_confusions([[5, 3, 0], [1, 6, 4], [0, 0, 2]], ["a", "b", "c"], 2) == [(1, 2, 4), (0, 1, 3)]


def test_gallery_picks_the_right_images_in_a_useful_order():
    preds = {
        "target": [0, 0, 1, 1, 1, 0],
        "pred": [1, 0, 1, 0, 1, 1],
        "confidence": [0.6, 0.9, 0.55, 0.8, 0.99, 0.95],
        "loss": [1.2, 0.1, 0.6, 2.0, 0.01, 3.0],
    }
    assert plots.matching_predictions(preds, 0, 1) == [5, 0]  # mistakes: most confident first
    assert plots.matching_predictions(preds, 1, 1) == [2, 4]  # right ones: least confident first
    assert plots.matching_predictions(preds, None, 0) == [1, 3]
    assert plots.top_loss_indices(preds, 2) == [5, 3]
    assert plots.prediction_caption(preds, 3, ["zero", "one"], with_loss=True) == "✗ true one → zero (80%), loss 2.00"
    img = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    big = plots.display_image(img, 96)
    assert big.shape == (96, 96) and big[11, 11] == 0 and big[12, 12] == img[1, 1, 0]


def test_every_run_status_has_its_icon():
    assert set(plots.STATUS_ICONS) == set(RunStatus)
    assert plots.status_label("completed") == "✅ completed" and plots.status_label(None) == "• ?"


def test_class_names_are_padded_or_cut_to_the_number_of_classes():
    assert plots.class_names_for(3, ["cat", "dog"]) == ["cat", "dog", "2"]
    assert plots.class_names_for(2, ["cat", "dog", "eel"]) == ["cat", "dog"]
    assert plots.class_names_for(2, None) == ["0", "1"]


def test_empty_inputs_give_empty_outputs():
    assert plots.learning_curves(pd.DataFrame(columns=["run_id", "epoch", "split", "name", "value"])) is None
    assert plots.runs_table(pd.DataFrame()).empty
    assert plots.tta_frame(pd.DataFrame()).empty
    assert plots.format_duration(3725) == "1 h 02 min" and plots.format_duration(65) == "1 min 05 s"
