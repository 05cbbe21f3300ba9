"""Per-image history: every validation image's prediction, stored packed once per epoch by the real
engine, read back, and shown (Run detail: a validation cell's images at any epoch, hard and forgotten
images, first-learned epochs; Compare: A-right-B-wrong and B-right-A-wrong, with McNemar's counts)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from db import queries, store
from engine import image_history as ih
from tests.test_pages_core import open_page, open_tab
from tests.test_pages_extra import _open_tab

EPOCHS = 3


# ------------------------------------------------------------------------------- pure
def test_packing_round_trips_in_4_bytes_an_image():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 1000, 10_000)
    conf = rng.random(10_000).astype(np.float32)
    pb, cb = ih.pack(pred, conf)
    assert len(pb) + len(cb) == 10_000 * ih.BYTES_PER_IMAGE == 40_000
    p2, c2 = ih.unpack(pb, cb, 10_000)
    assert np.array_equal(p2, pred) and np.allclose(c2, conf, atol=1e-3)  # float16: 3 significant digits
    with pytest.raises(ValueError):
        ih.unpack(pb, cb, 9_999)
    with pytest.raises(ValueError):
        ih.pack([40_000], [0.5])


def test_forgetting_and_first_learned_on_a_hand_made_history():
    correct = np.array(
        [  # images: 0 learned at 1 and kept, 1 learned then forgotten twice, 2 never, 3 learned late
            [1, 1, 0, 0],
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 0, 1],
        ],
        dtype=bool,
    )
    assert ih.forgetting_events(correct).tolist() == [0, 2, 0, 0]
    assert ih.flips(correct).tolist() == [0, 3, 0, 1]
    assert ih.first_learned(correct, [1, 2, 3, 4]).tolist() == [1, 1, ih.NEVER, 4]
    assert ih.never_learned(correct).tolist() == [2]
    assert ih.hard_and_forgotten(correct) == [1]


# ------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two real 3-epoch digits runs (in-process engine, DB sink), on the same split, then tested."""
    from control.launcher import run_dir_for
    from control.preflight import resolve_dataset
    from db.sink import DBSink
    from engine.config import parse_config
    from engine.training.loop import train
    from tests.conftest import open_lab, tiny_config

    root = tmp_path_factory.mktemp("history")
    with pytest.MonkeyPatch.context() as mp:
        url = open_lab(root, mp)
        ids = []
        for name, lr in (("a", 0.003), ("b", 0.0005)):
            cfg = parse_config(
                tiny_config(**{"train.epochs": EPOCHS, "train.max_steps_per_epoch": 6, "optim.lr": lr, "name": name})
            )
            run_id = store.create_run(url, cfg.model_dump(mode="json"), name=name)
            run_dir = run_dir_for(url, run_id)
            store.update_run(url, run_id, run_dir=str(run_dir))
            assert train(cfg, resolve_dataset(url, "digits"), run_dir, DBSink(url, run_id)).status == "completed"
            ids.append(run_id)
        yield {"url": url, "a": ids[0], "b": ids[1], "root": root}


@pytest.fixture
def in_lab(lab, monkeypatch):
    monkeypatch.setenv("LAB_DB_URL", lab["url"])
    monkeypatch.setenv("LAB_RUNS_DIR", str(lab["root"] / "runs"))
    return lab


def _val_split(url, run_id):
    from control.preflight import resolve_dataset
    from engine.config import DataConfig
    from engine.data import load_arrays, make_splits

    cfg = DataConfig.model_validate(queries.get_run(url, run_id)["config"]["data"])
    return make_splits(load_arrays(resolve_dataset(url, cfg.dataset)), cfg)


def _raw_rows(url, run_id):
    with sqlite3.connect(url.removeprefix("sqlite:///")) as c:
        return c.execute(
            "SELECT epoch, split, n, pred, confidence FROM epoch_predictions WHERE run_id = ? ORDER BY epoch",
            (run_id,),
        ).fetchall()


def test_a_run_stores_every_val_prediction_once_per_epoch_matching_its_confusion_matrices(lab):
    url, run_id = lab["url"], lab["a"]
    val_y = _val_split(url, run_id).val_y
    rows = _raw_rows(url, run_id)
    assert [(e, sp, n) for e, sp, n, _, _ in rows] == [(e, "val", len(val_y)) for e in range(1, EPOCHS + 1)]
    assert all(len(p) == len(c) == 2 * len(val_y) for *_, p, c in rows)  # int16 + float16

    history = queries.prediction_history(url, run_id)
    assert history.epochs == [1, 2, 3] and history.pred.shape == history.confidence.shape == (EPOCHS, len(val_y))
    for (_, _, _, p, c), hp, hc in zip(rows, history.pred, history.confidence):  # round trip
        assert np.array_equal(np.frombuffer(p, "<i2"), hp) and np.array_equal(np.frombuffer(c, "<f2"), hc)
    assert ((history.confidence > 0) & (history.confidence <= 1)).all()

    # every epoch's stored predictions are the epoch's stored validation confusion matrix and accuracy
    mats = queries.confusion_matrices(url, run_id, "val")
    hist = queries.metric_history(url, [run_id])
    val_acc = hist[(hist.split == "val") & (hist.name == "acc")].set_index("epoch")["value"]
    for epoch in history.epochs:
        pred = history.pred[history.row(epoch)]
        direct = np.zeros((10, 10), int)
        for t, p in zip(val_y, pred):
            direct[t, p] += 1
        assert direct.tolist() == mats[epoch]
        assert np.mean(pred == val_y) == pytest.approx(val_acc[epoch])


def test_forgetting_and_first_learned_equal_a_direct_count_over_the_stored_arrays(lab):
    url, run_id = lab["url"], lab["a"]
    val_y = _val_split(url, run_id).val_y
    raw = [np.frombuffer(p, "<i2") for *_, p, _ in _raw_rows(url, run_id)]
    s = ih.summary(queries.prediction_history(url, run_id), val_y)
    for i in range(len(val_y)):
        right = [bool(r[i] == val_y[i]) for r in raw]
        assert s["forgetting"][i] == sum(a and not b for a, b in zip(right, right[1:]))
        assert s["flips"][i] == sum(a != b for a, b in zip(right, right[1:]))
        assert s["first_learned"][i] == (right.index(True) + 1 if any(right) else ih.NEVER)
    assert set(s["never"].tolist()) == {i for i in range(len(val_y)) if not any(r[i] == val_y[i] for r in raw)}
    assert s["hard"] and all(s["forgetting"][i] > 0 for i in s["hard"])
    assert list(s["forgetting"][s["hard"]]) == sorted(s["forgetting"][s["hard"]], reverse=True)


def test_truncate_after_drops_later_epochs_predictions(db_url):
    run_id = store.create_run(db_url, {"data": {"dataset": "digits"}, "train": {"epochs": 3}})
    for epoch in (1, 2, 3):
        preds = {"val": (np.array([epoch, 0, 1]), np.array([0.5, 0.6, 0.7]))}
        store.add_epoch(db_url, run_id, epoch, {("val", "acc"): 0.5}, predictions=preds)
    store.add_epoch(db_url, run_id, 3, {("val", "acc"): 0.5}, predictions={"val": (np.array([9, 9, 9]), np.ones(3))})
    assert queries.prediction_epochs(db_url, run_id) == [1, 2, 3]  # a re-run epoch replaces its row
    assert queries.prediction_history(db_url, run_id).pred[-1].tolist() == [9, 9, 9]
    store.truncate_after(db_url, run_id, 1)
    assert queries.prediction_epochs(db_url, run_id) == [1]


def test_a_run_killed_after_an_epochs_rows_resumes_with_exactly_one_history_row_per_epoch(db_url, monkeypatch):
    from tests.lifecycle_support import kill_engines
    from tests.test_kill_between_writes import CFG, _killed_then_resumed

    try:
        resumed = _killed_then_resumed(db_url, monkeypatch, ["epoch_end", 2])  # epoch 2's rows, then kill -9
    finally:
        kill_engines(db_url)
    rows = _raw_rows(db_url, resumed)
    assert [e for e, *_ in rows] == [1, 2, 3]  # epoch 2 written, dropped by resume's truncate, written again
    val_y = _val_split(db_url, resumed).val_y
    history, mats = queries.prediction_history(db_url, resumed), queries.confusion_matrices(db_url, resumed, "val")
    assert history.n == len(val_y) and CFG["train.epochs"] == 3
    for epoch in (1, 2, 3):  # each kept row is the one its epoch's other rows were written with
        assert ih.confusion(history.pred[history.row(epoch)], val_y, 10).tolist() == mats[epoch]


# ------------------------------------------------------------------------------- pages
def test_run_detail_shows_a_validation_cells_images_at_any_epoch_and_the_history_gallery(in_lab):
    url, run_id = in_lab["url"], in_lab["a"]
    val_y = _val_split(url, run_id).val_y
    history = queries.prediction_history(url, run_id)
    at = open_page("run_detail", run=run_id)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Validation images"] == f"{len(val_y):,}"
    s = ih.summary(history, val_y)
    assert metrics["Never learned"] == f"{len(s['never']):,}"
    assert metrics["Forgotten at least once"] == f"{s['forgotten_once']:,}"
    charts = {c.key for c in at.get("plotly_chart")}
    assert {f"detail_cm_{run_id}", f"detail_first_learned_{run_id}"} <= charts
    first = json.loads(next(c for c in at.get("plotly_chart") if c.key == f"detail_first_learned_{run_id}").proto.spec)
    assert first["data"][0]["y"] == [int((s["first_learned"] == e).sum()) for e in (1, 2, 3)] + [len(s["never"])]

    def shown(prefix):
        return [img.caption for el in at.image for img in el.proto.imgs if img.caption.startswith(prefix)]

    assert len(shown("#")) == len(s["hard"]) + min(len(s["never"]), 48)  # hard-and-forgotten + never-learned tiles

    # a validation cell at epoch 2: exactly its images, from the stored predictions of epoch 2
    at.select_slider(key=f"detail_cm_epoch_{run_id}").set_value(2).run()
    pred2 = history.pred[history.row(2)]
    t = int(np.bincount(val_y).argmax())
    p = int(pred2[val_y == t][0])  # a cell that holds images at epoch 2
    at.selectbox(key=f"detail_val_true_{run_id}").set_value(t)
    at.selectbox(key=f"detail_val_pred_{run_id}").set_value(p)
    at.run()
    assert not at.exception
    expected = int(((val_y == t) & (pred2 == p)).sum())
    mark = "✓" if t == p else "✗"
    cell = shown(f"{mark} true {t} → {p} (")
    assert len(cell) == min(expected, 48) > 0
    assert any(f"{expected} validation image(s) at epoch 2" in c.value for c in at.caption)


def test_compare_ab_galleries_hold_exactly_mcnemars_discordant_counts(in_lab):
    from control import studies

    url, a, b = in_lab["url"], in_lab["a"], in_lab["b"]
    at = open_page("compare", runs=f"{a},{b}")
    tab = _open_tab(at, "A vs B images")
    mcnemar = studies.compare_runs(url, a, b)  # what the "Is B better?" tab tests
    metrics = {m.label: m.value for m in tab.metric}
    assert metrics["Right in A, wrong in B"] == str(mcnemar["only_a"])
    assert metrics["Right in B, wrong in A"] == str(mcnemar["only_b"])
    assert mcnemar["only_a"] + mcnemar["only_b"] > 0
    tiles = [img.caption for el in tab.image for img in el.proto.imgs]
    assert len(tiles) == min(mcnemar["only_a"], 48) + min(mcnemar["only_b"], 48)
    assert sum(c.startswith("✓") for c in tiles) == len(tiles)  # each tile: right in its own run...
    assert all("other: ✗" in c for c in tiles)  # ...and wrong in the other

    # on the validation split, at the last epoch: the counts from the per-image histories
    at.radio(key="compare_ab_source").set_value("val").run()
    tab = next(t for t in at.tabs if t.label == "A vs B images")
    val_y = _val_split(url, a).val_y
    ra = queries.prediction_history(url, a).pred[-1] == val_y
    rb = queries.prediction_history(url, b).pred[-1] == val_y
    metrics = {m.label: m.value for m in tab.metric}
    assert metrics["Right in A, wrong in B"] == str(int((ra & ~rb).sum()))
    assert metrics["Right in B, wrong in A"] == str(int((~ra & rb).sum()))


def test_the_checkpoint_picker_drives_the_test_views_and_offers_evaluate_only_where_nothing_is_kept(in_lab):
    url, run_id = in_lab["url"], in_lab["a"]
    best = next(e for e in queries.evaluations(url, run_id) if e["split"] == "test" and e["checkpoint"] == "best")
    at = open_page("run_detail", run=run_id)
    picker = at.selectbox(key=f"detail_test_ckpt_{run_id}")
    assert picker.value == "best"  # best by default, with its kept evaluation
    assert f"best (epoch {best['epoch']}) — test accuracy {best['accuracy']:.2%}" in picker.options
    assert "epoch_0001 (epoch 1) — not evaluated yet" in picker.options
    assert not [b for b in at.button if b.label.startswith("🧪 Evaluate best")]  # kept: never evaluated again
    assert any(f"best checkpoint, epoch {best['epoch']}" in c.value for c in open_tab(at, "Per class").caption)

    at.selectbox(key=f"detail_test_ckpt_{run_id}").set_value("epoch_0001").run()  # the tree of the open tab
    assert not at.exception
    from dashboard.views.checkpoint_view import NOT_EVALUATED

    assert [i.value for i in open_tab(at, "Per class").info] == [NOT_EVALUATED]
    assert [i.value for i in open_tab(at, "Test errors & gallery").info] == [NOT_EVALUATED]
    evaluate = next(b for b in at.button if b.label == "🧪 Evaluate epoch_0001 on test")
    assert not evaluate.disabled
