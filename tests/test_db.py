"""DB round trip on a real SQLite file, through the same functions the engine and dashboard use."""

import sqlite3

from sqlalchemy import inspect

from db import queries, store
from db.models import COMPLETED, RUNNING
from db.session import get_engine
from tests.conftest import tiny_config


def test_schema_is_migrated_and_sqlite_is_in_wal_mode(db_url):
    path = db_url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] is not None
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert {
        "runs",
        "metrics",
        "latest_metrics",
        "confusion_matrices",
        "checkpoints",
        "evaluations",
        "tta_results",
        "datasets",
    } <= tables
    assert {d["name"] for d in queries.list_datasets(db_url)} >= {"digits"}


def test_run_metrics_confusion_checkpoint_round_trip(db_url):
    cfg = tiny_config()
    run_id = store.create_run(db_url, cfg)
    store.mark_started(db_url, run_id, pid=123, device="cpu")
    for epoch, (acc, loss) in enumerate([(0.5, 1.2), (0.8, 0.6), (0.7, 0.7)], start=1):
        store.add_epoch(
            db_url,
            run_id,
            epoch,
            {("val", "acc"): acc, ("val", "loss"): loss, ("train", "lr"): 0.1},
            {"val": [[epoch, 1], [0, 2]]},
        )
    store.add_checkpoint(db_url, run_id, 2, "best", "/x/best.pt", "val_acc", 0.8)
    store.mark_ended(db_url, run_id, COMPLETED)

    run = queries.get_run(db_url, run_id)
    assert run["status"] == COMPLETED and run["config"] == cfg and run["epochs_done"] == 3
    hist = queries.metric_history(db_url, [run_id], ["acc"])
    assert hist["value"].tolist() == [0.5, 0.8, 0.7]
    table = queries.list_runs(db_url).set_index("id")
    assert table.loc[run_id, "best_val_acc"] == 0.8  # best, not latest
    assert table.loc[run_id, "val_acc"] == 0.7
    assert queries.confusion_matrices(db_url, run_id)[3] == [[3, 1], [0, 2]]
    assert queries.checkpoint_path(db_url, run_id, "best") == "/x/best.pt"


def test_rewriting_an_epoch_replaces_its_rows(db_url):
    run_id = store.create_run(db_url, tiny_config(), status=RUNNING)
    store.add_epoch(db_url, run_id, 1, {("val", "acc"): 0.1})
    store.add_epoch(db_url, run_id, 1, {("val", "acc"): 0.2})
    assert queries.metric_history(db_url, [run_id])["value"].tolist() == [0.2]
