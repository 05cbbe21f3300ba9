"""Compare, Augmentations and Datasets pages under streamlit's AppTest, against a real SQLite file holding
runs trained by the real engine (in-process, 2 epochs on the digits) and datasets written from real images."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from db import queries, store
from db.sink import DBSink
from tests.conftest import tiny_config
from tests.test_pages_core import open_tab

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")

# Run A is the tiny config; B changes exactly these fields; C changes only the seed.
B_CHANGES = {
    "name": "tiny-b",
    "optim.lr": 0.01,
    "augment.train": [{"name": "HorizontalFlip", "p": 0.5}],
    "eval.tta": ["none", "hflip", "vflip"],
}
A_VS_B_FIELDS = {
    "name",
    "optim.lr",
    "eval.tta",
    "augment.train",
    "augment.train[0].name",
    "augment.train[0].p",
    "augment.train[0].params",
}


def _train(url: str, raw: dict, name: str) -> int:
    from control.launcher import run_dir_for
    from control.preflight import resolve_dataset
    from engine.config import parse_config
    from engine.training.loop import train

    cfg = parse_config(raw)
    run_id = store.create_run(url, cfg.model_dump(mode="json"), name=name)
    store.update_run(url, run_id, run_dir=str(run_dir_for(url, run_id)))
    result = train(cfg, resolve_dataset(url, cfg.data.dataset), run_dir_for(url, run_id), DBSink(url, run_id))
    assert result.status == "completed"
    return run_id


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One real SQLite file with three finished runs, shared by the read-only page tests of this module."""
    from tests.conftest import open_lab

    with pytest.MonkeyPatch.context() as mp:
        url = open_lab(tmp_path_factory.mktemp("lab"), mp)
        base = {"train.epochs": 2, "eval.tta": ["none", "hflip"]}
        a = _train(url, tiny_config(**base), "run-a")
        b = _train(url, tiny_config(**{**base, **B_CHANGES}), "run-b")
        c = _train(url, tiny_config(**{**base, "train.seed": 1}), "run-c")
        yield {"url": url, "a": a, "b": b, "c": c}


def _page(page: str, *, query: dict | None = None, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.switch_page(f"views/{page}")
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _decode(node):
    """Plotly's JSON keeps numpy arrays as {dtype, bdata[, shape]} (base64): back to plain lists."""
    if isinstance(node, dict):
        if "bdata" in node and "dtype" in node:
            arr = np.frombuffer(base64.b64decode(node["bdata"]), dtype=np.dtype(node["dtype"]))
            if node.get("shape"):
                arr = arr.reshape([int(x) for x in str(node["shape"]).split(",")])
            return arr.tolist()
        return {k: _decode(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_decode(v) for v in node]
    return node


def _charts(at) -> dict[str, dict]:
    """Plotly charts on the page by key -> their figure spec (data + layout)."""
    return {c.key: _decode(json.loads(c.proto.spec)) for c in at.get("plotly_chart")}


def _tab(at, label):
    return next(t for t in at.tabs if t.label == label)


def _open_tab(at, label, key="compare_tab"):
    """Compare computes only the tab on screen: open one (as a click on it does) and return its contents."""
    return open_tab(at, label, key)


# ------------------------------------------------------------------------------------- compare
def test_compare_from_query_params_shows_curves_diff_tables_confusion_per_class_tta(lab):
    url, a, b = lab["url"], lab["a"], lab["b"]
    at = _page("compare.py", query={"runs": f"{a},{b}"})
    assert at.multiselect(key="compare_select").value == [a, b]

    diff = _open_tab(at, "Config diff").dataframe[0].value
    assert set(diff.index) == A_VS_B_FIELDS
    assert diff.loc["optim.lr"].tolist() == ["0.003", "0.01"]
    assert diff.loc["augment.train[0].name"].tolist() == ["—", "HorizontalFlip"]

    charts = {}
    for label in ("Curves", "Confusion matrices", "Per class", "TTA"):
        _open_tab(at, label)
        charts |= _charts(at)
    assert {"compare_curves", "compare_cm_grid", "compare_cm_diff", "compare_pc", "compare_tta"} <= set(charts)
    curves = charts["compare_curves"]
    assert {t["name"] for t in curves["data"]} == {
        f"#{r} run-{n} · {s}" for r, n in ((a, "a"), (b, "b")) for s in ("train", "val")
    }
    history = queries.metric_history(url, [a], ["acc"])
    val_a = history[history["split"] == "val"]["value"].tolist()
    trace = next(t for t in curves["data"] if t["name"] == f"#{a} run-a · val")
    assert trace["y"] == pytest.approx(val_a) and "hovertemplate" in trace

    # best / final table: the test accuracy the engine wrote for each run
    table = _open_tab(at, "Best / final").dataframe[0].value
    for run_id, label in ((a, f"#{a} run-a"), (b, f"#{b} run-b")):
        test_eval = queries.final_evaluations(url, [run_id])[run_id]
        assert table.loc[label, "test acc"] == pytest.approx(test_eval["accuracy"])

    # confusion matrices side by side: one heatmap per run, holding the test confusion counts
    heatmaps = [t for t in charts["compare_cm_grid"]["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 2
    assert (
        np.asarray(heatmaps[0]["customdata"]).sum()
        == np.asarray(queries.final_evaluations(url, [a])[a]["confusion"]).sum()
    )

    # per-class grouped bars: recall per class from the evaluations table
    bars = charts["compare_pc"]["data"]
    assert [t["name"] for t in bars] == [f"#{a} run-a", f"#{b} run-b"]
    assert bars[1]["y"] == pytest.approx(queries.final_evaluations(url, [b])[b]["per_class"]["recall"])

    # TTA grouped bars: every variant either run evaluated; run A never ran vflip
    tta = charts["compare_tta"]["data"]
    assert tta[0]["x"] == ["none", "hflip", "vflip"] and tta[0]["y"][2] is None
    stored = queries.tta_results(url, [b]).set_index("variant")["accuracy"]
    assert tta[1]["y"] == pytest.approx([stored["none"], stored["hflip"], stored["vflip"]])


def test_compare_takes_the_runs_page_selection_and_diffs_exactly_the_changed_field(lab):
    a, c = lab["a"], lab["c"]
    at = _page("compare.py", state={"compare_ids": [c, a]})
    assert at.multiselect(key="compare_select").value == [c, a]
    assert at.query_params["runs"] == f"{c},{a}"  # the view is a shareable link
    diff = _open_tab(at, "Config diff").dataframe[0].value
    assert list(diff.index) == ["train.seed"] and diff.loc["train.seed"].tolist() == ["1", "0"]


def test_compare_controls_smoothing_log_axis_metric_and_confusion_source(lab):
    a, b = lab["a"], lab["b"]
    at = _page("compare.py", query={"runs": f"{a},{b}"})
    at.selectbox(key="compare_metric").set_value("loss")
    at.toggle(key="compare_smooth").set_value(True)
    at.toggle(key="compare_log").set_value(True)
    at.run()
    assert not at.exception, at.exception
    curves = _charts(at)["compare_curves"]
    assert curves["layout"]["yaxis"]["type"] == "log"
    raw = queries.metric_history(lab["url"], [a], ["loss"])
    raw = raw[raw["split"] == "train"]["value"].to_numpy()
    trace = next(t for t in curves["data"] if t["name"] == f"#{a} run-a · train")
    assert trace["y"][0] == pytest.approx(raw[0]) and trace["y"][-1] != pytest.approx(raw[-1])  # EMA lags the raw
    assert "raw" in trace["hovertemplate"]
    # val confusion of the last epoch comes from the confusion_matrices table
    _open_tab(at, "Confusion matrices")
    at.radio(key="compare_cm_source").set_value("val: last epoch").run()
    grid = _charts(at)["compare_cm_grid"]["data"]
    epoch, matrix = queries.latest_confusion(lab["url"], a, "val")
    assert np.array_equal(np.asarray(grid[0]["customdata"]), np.asarray(matrix))


def test_compare_needs_two_known_runs(lab):
    at = _page("compare.py", query={"runs": f"{lab['a']},999,x"})
    warnings = " ".join(w.value for w in at.warning)
    assert "no such run: #999" in warnings and "not run ids" in warnings
    assert any("at least 2 runs" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_compare_with_no_runs_says_so(db_url):
    at = _page("compare.py")
    assert any("No runs yet" in i.value for i in at.info)


# ------------------------------------------------------------------------------------- augmentations
BUILDER = {
    "data": {"dataset": "digits", "image_size": 16},
    "augment": {
        "train": [{"name": "HorizontalFlip", "p": 0.5}, {"name": "PadRandomCrop", "p": 1.0, "params": {"padding": 2}}],
        "mixup": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
    },
}


def test_augmentations_from_the_builder_grid_reroll_and_cutmix(lab):
    at = _page("augmentations.py", state={"builder_config": BUILDER})
    assert at.radio(key="aug_source").value == "The builder (being edited)"
    assert at.selectbox(key="aug_dataset").value == "digits"
    k, n = at.slider(key="aug_k").value, at.slider(key="aug_n").value
    rows = [im for im in at.image if im.captions[0].startswith("original ·")]
    assert len(rows) == k and all(len(r.value) == n + 1 for r in rows)
    assert rows[0].captions[0] == "original · 0"
    assert any("16×16×1 as trained" in c.value for c in at.caption)  # data.image_size applied as in training
    mixed = [im for im in at.image if all(c[0].isdigit() and c.endswith("%") for c in im.captions)]  # "3 70% + 5 30%"
    assert len(mixed) == 1 and len(mixed[0].value) == k - k % 2
    before = [r.value for r in rows]
    seed = at.session_state["aug_seed"]
    at.button(key="aug_reroll").click().run()
    assert not at.exception and at.session_state["aug_seed"] != seed
    after = [im.value for im in at.image if im.captions[0].startswith("original ·")]
    assert [r[0] for r in after] == [r[0] for r in before]  # the same images...
    assert [r[1:] for r in after] != [r[1:] for r in before]  # ...augmented anew


def test_augmentations_from_a_past_run_and_editor_errors(lab):
    at = _page("augmentations.py")
    at.radio(key="aug_source").set_value("A past run").run()
    at.selectbox(key="aug_run").set_value(lab["b"]).run()
    assert not at.exception
    assert any("1 step(s): HorizontalFlip (p=0.5)" in c.value for c in at.caption)
    at.radio(key="aug_source").set_value("Edit here").run()
    at.text_area(key="aug_yaml").input("train:\n- name: Rotatte\n  p: 0.5\n").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["augment.train.0: unknown transform 'Rotatte'"]
    assert not at.image


# ------------------------------------------------------------------------------------- datasets
def _register(at, kind: str, name: str, path: str) -> AppTest:
    at.selectbox(key="register_kind").set_value(kind).run()
    at.text_input(key="register_name").input(name)
    at.text_input(key="register_path").input(path)
    at.button(key="register_submit").click().run()
    assert not at.exception, at.exception
    return at


def test_datasets_page_shows_summary_counts_and_samples(db_url):
    at = _page("datasets.py")
    assert "digits" in at.dataframe[0].value["name"].tolist()
    at.selectbox(key="datasets_pick").set_value("digits").run()
    counts = _charts(at)["datasets_counts"]["data"][0]
    assert sum(counts["y"]) == 1797 and len(counts["x"]) == 10
    rows = [im for im in at.image if im.captions and im.captions[0] in [str(i) for i in range(10)]]
    assert len(rows) == 10 and all(len(r.value) == at.slider(key="datasets_per_class").value for r in rows)
    assert any("**Mean**" in m.value for m in at.markdown)


def test_datasets_page_refuses_broken_inputs_and_registers_nothing(db_url, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    one_class = tmp_path / "one_class" / "seven"
    one_class.mkdir(parents=True)
    for i, img in enumerate(digits.images[digits.target == 7][:5]):
        Image.fromarray((img * 255 / 16).astype(np.uint8)).save(one_class / f"{i}.png")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip archive")
    before = [d["name"] for d in queries.list_datasets(db_url)]
    at = _page("datasets.py")
    for kind, path, message in (
        ("imagefolder", str(tmp_path / "nowhere"), "path not found"),
        ("imagefolder", str(tmp_path / "one_class"), "at least two classes"),
        ("npz", str(tmp_path / "corrupt.npz"), "could not read npz"),
    ):
        _register(at, kind, "should_not_exist", path)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith("Not registered:") and message in errors[0], errors
    assert [d["name"] for d in queries.list_datasets(db_url)] == before  # not a row more


def test_datasets_page_registers_an_npz_of_real_digits(db_url, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "digits16.npz"
    x = np.kron(np.round(digits.images * 255 / 16), np.ones((2, 2))).astype(np.uint8)  # 16x16 real digits
    np.savez(path, x_train=x[:1500], y_train=digits.target[:1500], x_test=x[1500:], y_test=digits.target[1500:])
    at = _page("datasets.py")
    _register(at, "npz", "digits16", str(path))
    assert not at.error
    assert any("Registered **digits16**: 10 classes, 1,500 train / 297 test" in s.value for s in at.success)
    row = queries.get_dataset(db_url, "digits16")
    assert row["summary"]["image_shape"] == [16, 16, 1]
    assert at.selectbox(key="datasets_pick").value == "digits16"
    assert "digits16" in at.dataframe[0].value["name"].tolist()
