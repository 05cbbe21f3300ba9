"""DB round trip on a real SQLite file, through the same functions the engine and dashboard use."""

import sqlite3

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from db import queries, store
from db.models import Checkpoint, ConfusionMatrix, Evaluation, LatestMetric, Metric, RunStatus, TTAResult
from db.session import get_engine, read
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


def test_the_fast_head_check_knows_alembics_head_and_an_old_database_is_still_upgraded(tmp_path):
    """init_db skips Alembic for a database at HEAD_REVISION: that constant must be Alembic's head, and a
    database one migration behind must still be upgraded (not taken for current)."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from db.session import HEAD_REVISION, alembic_config, init_db

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with get_engine(url).begin() as conn:
        cfg = alembic_config(url, conn)
        assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION
        command.upgrade(cfg, "0003")
    init_db(url)
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    assert "lr_finds" in {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


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
    store.mark_ended(db_url, run_id, RunStatus.COMPLETED)

    run = queries.get_run(db_url, run_id)
    assert run["status"] == RunStatus.COMPLETED and run["config"] == cfg and run["epochs_done"] == 3
    hist = queries.metric_history(db_url, [run_id], ["acc"])
    assert hist["value"].tolist() == [0.5, 0.8, 0.7]
    table = queries.list_runs(db_url).set_index("id")
    assert table.loc[run_id, "best_val_acc"] == 0.8  # best, not latest
    assert table.loc[run_id, "val_acc"] == 0.7
    assert queries.confusion_matrices(db_url, run_id)[3] == [[3, 1], [0, 2]]
    assert queries.checkpoint_path(db_url, run_id, "best") == "/x/best.pt"


def test_rewriting_an_epoch_replaces_its_rows(db_url):
    run_id = store.create_run(db_url, tiny_config(), status=RunStatus.RUNNING)
    store.add_epoch(db_url, run_id, 1, {("val", "acc"): 0.1})
    store.add_epoch(db_url, run_id, 1, {("val", "acc"): 0.2})
    assert queries.metric_history(db_url, [run_id])["value"].tolist() == [0.2]


def test_an_unknown_run_status_is_refused_by_the_database(db_url):
    run_id = store.create_run(db_url, tiny_config())
    with pytest.raises(IntegrityError, match="ck_runs_status|CHECK constraint"):
        store.update_run(db_url, run_id, status="finished")
    with pytest.raises(IntegrityError):
        store.create_run(db_url, tiny_config(), status="paused")
    with get_engine(db_url).connect() as conn, pytest.raises(IntegrityError):  # not even by hand
        conn.execute(text("UPDATE runs SET status = 'done' WHERE id = :id"), {"id": run_id})
    assert queries.get_run(db_url, run_id)["status"] == RunStatus.QUEUED
    for status in RunStatus:  # and every known one is accepted
        store.update_run(db_url, run_id, status=status)
        assert queries.get_run(db_url, run_id)["status"] == status


def test_deleting_a_run_deletes_its_rows_through_the_foreign_keys(db_url):
    with get_engine(db_url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    run_id = store.create_run(db_url, tiny_config(), status=RunStatus.RUNNING)
    child = store.create_run(db_url, tiny_config(), parent_run_id=run_id)
    store.add_epoch(db_url, run_id, 1, {("val", "acc"): 0.5}, {"val": [[1, 0], [0, 1]]})
    store.add_checkpoint(db_url, run_id, 1, "last", "/x/last.pt")
    per_class = {"f1": [1.0, 1.0]}
    store.add_evaluation(db_url, run_id, "test", 1, "final", 1.0, 0.1, per_class, [[1, 0], [0, 1]], None)
    store.add_tta(db_url, run_id, "test", "final", {"none": {"accuracy": 1.0, "per_class": per_class}})
    tables = (Metric, LatestMetric, ConfusionMatrix, Checkpoint, Evaluation, TTAResult)

    def rows():
        return read(db_url, lambda s: {t.__tablename__: s.query(t).filter(t.run_id == run_id).count() for t in tables})

    assert all(rows().values())
    store.delete_run(db_url, run_id)  # a running run is not deleted
    assert queries.get_run(db_url, run_id) is not None and all(rows().values())
    store.mark_ended(db_url, run_id, RunStatus.COMPLETED)
    store.delete_run(db_url, run_id)
    assert queries.get_run(db_url, run_id) is None
    assert rows() == {t.__tablename__: 0 for t in tables}
    assert queries.get_run(db_url, child)["parent_run_id"] is None  # the fine-tuned run stays, unlinked


def test_upgrading_a_database_with_runs_keeps_every_row(tmp_path):
    """Adding the status CHECK rebuilds the runs table on SQLite: its metric rows must survive it."""
    from alembic import command

    from db.session import alembic_config, init_db

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with get_engine(url).begin() as conn:
        command.upgrade(alembic_config(url, conn), "0001")
    con = sqlite3.connect(tmp_path / "old.db")
    con.execute(
        "INSERT INTO runs (id, name, config, status, dataset, model, tags, notes, backend, created_at, "
        "stop_requested, resume_requested, epochs_planned, epochs_done) "
        "VALUES (1, 'old', '{}', 'completed', 'digits', 'custom:small_cnn', '[]', '', 'local', '2026-01-01', 0, 0, 1, 1)"
    )
    con.execute("INSERT INTO metrics (run_id, epoch, split, name, value) VALUES (1, 1, 'val', 'acc', 0.5)")
    con.commit()
    con.close()
    init_db(url)
    assert queries.get_run(url, 1)["status"] == RunStatus.COMPLETED
    assert queries.metric_history(url, [1])["value"].tolist() == [0.5]
    with pytest.raises(IntegrityError):
        store.update_run(url, 1, status="finished")


def _schema(url: str) -> dict:
    from sqlalchemy import inspect

    insp = inspect(get_engine(url))
    out = {}
    for table in insp.get_table_names():
        out[table] = {
            "columns": {c["name"]: (str(c["type"]), c["nullable"], c["default"]) for c in insp.get_columns(table)},
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]), str(f["options"]))
                for f in insp.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)
            ),
            "uniques": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "checks": sorted((c["name"], " ".join(c["sqltext"].split())) for c in insp.get_check_constraints(table)),
        }
    return out


def test_a_new_database_gets_the_migrations_schema_without_alembic(tmp_path):
    """A new SQLite file is created from the models and stamped at head, not migrated step by step: its
    schema (columns, types, keys, indexes, unique and check constraints) must be what the migrations
    build, or a later migration would meet a database it was not written for. Alembic is not imported."""
    import subprocess
    import sys

    from alembic import command

    from db.session import HEAD_REVISION, alembic_config, init_db
    from tests.conftest import ROOT

    migrated, new = f"sqlite:///{tmp_path / 'migrated.db'}", f"sqlite:///{tmp_path / 'new.db'}"
    with get_engine(migrated).begin() as conn:
        command.upgrade(alembic_config(migrated, conn), "head")
    probe = f"import sys; from db.session import init_db; init_db({new!r}); print('alembic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
    assert _schema(new) == _schema(migrated)
    con = sqlite3.connect(tmp_path / "new.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    init_db(new)  # a second start finds it at head and leaves it so
    assert _schema(new) == _schema(migrated)
