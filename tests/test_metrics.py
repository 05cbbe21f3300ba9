"""Which way is better, per metric: the one definition the engine, the DB and the dashboard use."""

import pandas as pd

from dashboard.plots_compare import best_run
from db import queries, store
from engine.metrics import is_better, lower_is_better
from tests.conftest import tiny_config


def test_loss_and_time_are_lower_is_better_everything_else_higher():
    assert lower_is_better("loss") and lower_is_better("val_loss") and lower_is_better("epoch_seconds")
    assert not lower_is_better("acc") and not lower_is_better("val_acc") and not lower_is_better("images_per_sec")
    assert is_better("val_loss", 0.4, 0.5) and not is_better("val_loss", 0.5, 0.4)
    assert is_better("val_acc", 0.9, 0.8) and not is_better("val_acc", 0.8, 0.8)
    assert is_better("val_acc", 0.1, None)
    assert not is_better("val_loss", 0.49, 0.5, min_delta=0.02) and is_better("val_loss", 0.47, 0.5, min_delta=0.02)


def test_the_db_keeps_the_best_value_in_each_metrics_direction(db_url):
    run_id = store.create_run(db_url, tiny_config())
    for epoch, (acc, loss) in enumerate([(0.5, 0.9), (0.8, 0.4), (0.7, 0.6)], start=1):
        store.add_epoch(db_url, run_id, epoch, {("val", "acc"): acc, ("val", "loss"): loss})
    best = queries.latest_metrics(db_url, [run_id]).set_index("name")
    assert best.loc["acc", "best_value"] == 0.8 and best.loc["loss", "best_value"] == 0.4
    assert best.loc["acc", "best_epoch"] == best.loc["loss", "best_epoch"] == 2


def test_the_compare_page_picks_the_best_run_in_the_metrics_direction():
    table = pd.DataFrame({"best val acc": [0.9, 0.8], "best val loss": [0.5, 0.3]}, index=["#1", "#2"])
    assert best_run(table, "best val acc") == "#1"
    assert best_run(table, "best val loss") == "#2"
