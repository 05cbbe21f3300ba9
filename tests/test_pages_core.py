"""AppTest for the New run, Runs and Run detail pages, against a real SQLite file, runs trained by
the real engine, and real engine subprocesses for launch, stop and "evaluate on test"."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from db import queries, store

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
K = "cfg:"
FINAL = ("completed", "failed", "stopped", "lost")


# ------------------------------------------------------------------------------- helpers
def open_page(page: str, timeout: float = 120, **query) -> AppTest:
    """The real app (entry script + navigation) switched to one page, with optional query params."""
    st.cache_data.clear()  # each test sees its own DB as it is now
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()  # the default page first: AppTest learns st.navigation's pages from it
    at.switch_page(f"views/{page}.py")
    for k, v in query.items():
        at.query_params[k] = str(v)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def open_tab(at: AppTest, label: str, key: str = "detail_tabs"):
    """Run detail (and Compare) compute only the tab on screen: open one, as a click on it does, and
    return it."""
    at.session_state[key] = label
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return next(t for t in at.tabs if t.label == label)


def section_of_key(key: str) -> str:
    """The New run section (tab) that draws the widget with this key."""
    from dashboard import forms

    if key.startswith(K):
        return forms.section_of(key[len(K) :])
    if key.startswith("builder_lr_find"):
        return "optim"
    return "augment"  # a step's widgets (aug:...), the transform picker, the pipeline preview


def open_section(at: AppTest, section: str) -> None:
    """Open a New run tab, as a click on it does (the builder draws only the open tab's widgets)."""
    at.session_state["builder_section"] = section
    at.run()
    assert not at.exception, [e.message for e in at.exception]


def field(at: AppTest, kind: str, key: str):
    """A New run widget by key, opening its tab first when another tab is open."""
    try:
        return getattr(at, kind)(key=key)
    except KeyError:
        open_section(at, section_of_key(key))
        return getattr(at, kind)(key=key)


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r} in {[b.label for b in at.button]}"
    return found[0]


def texts(elements) -> list[str]:
    """The text a person reads: user text is backslash-escaped markdown (dashboard.text.plain), and
    markdown drops those escapes; the word joiner inside escaped URLs is invisible."""
    import re

    from dashboard.text import WORD_JOINER

    return [re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", e.value).replace(WORD_JOINER, "") for e in elements]


def wait_for_status(url: str, run_id: int, statuses, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = queries.get_run(url, run_id)["status"]
        if status in statuses:
            return status
        time.sleep(0.25)
    raise AssertionError(
        f"run {run_id} still {status} after {timeout} s; log:\n"
        + Path(queries.get_run(url, run_id)["log_path"] or "/dev/null").read_text()[-3000:]
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_module):
    """One DB for the read-only page tests: run 1 trained for 2 epochs by the real engine (with TTA)
    and run 2, a run that failed before its first epoch."""
    from control.launcher import run_dir_for
    from control.preflight import resolve_dataset
    from db.sink import DBSink
    from engine.config import parse_config
    from engine.training.loop import train
    from tests.conftest import open_lab

    root = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as mp:
        url = open_lab(root, mp)
        cfg = parse_config(
            tiny_module(
                **{
                    "train.epochs": 2,
                    "train.max_steps_per_epoch": 8,
                    "eval.tta": ["none", "hflip"],
                    "name": "trained",
                    "augment.train": [{"name": "Rotate", "p": 0.5, "params": {"limit": 10}}],
                }
            )
        )
        run_id = store.create_run(url, cfg.model_dump(mode="json"), name="trained", tags=["baseline"])
        run_dir = run_dir_for(url, run_id)
        store.update_run(url, run_id, run_dir=str(run_dir), log_path=str(run_dir / "run.log"))
        run_dir.mkdir(parents=True)
        (run_dir / "run.log").write_text("epoch 1 ...\nepoch 2 ...\n")
        result = train(cfg, resolve_dataset(url, "digits"), run_dir, DBSink(url, run_id))
        assert result.status == "completed"
        failed = store.create_run(url, tiny_module(**{"name": "broken"}), name="broken", status="running")
        store.mark_ended(url, failed, "failed", error="RuntimeError: out of luck", traceback="Traceback ...")
        yield {"url": url, "trained": run_id, "failed": failed, "root": root, "mp": mp}


@pytest.fixture(scope="module")
def tiny_module():
    from tests.conftest import tiny_config

    return tiny_config


@pytest.fixture
def in_lab(lab, monkeypatch):
    monkeypatch.setenv("LAB_DB_URL", lab["url"])
    monkeypatch.setenv("LAB_RUNS_DIR", str(lab["root"] / "runs"))
    return lab


# ------------------------------------------------------------------------------- New run
def test_form_builds_the_expected_config_and_launch_starts_a_real_run(db_url):
    at = open_page("new_run")
    assert [t.label for t in at.tabs][:9] == [
        "Data",
        "Model",
        "Augmentation",
        "Optimizer",
        "LR schedule",
        "Loss",
        "Regularization",
        "Training",
        "Evaluation",
    ]
    field(at, "text_input", K + "name").set_value("from the form")
    at.text_input(key="builder_tags").set_value("ui, smoke")
    field(at, "number_input", K + "train.epochs").set_value(2)
    field(at, "number_input", K + "train.batch_size").set_value(32)
    field(at, "selectbox", K + "optim.name").set_value("sgd")
    field(at, "selectbox", K + "schedule.name").set_value("multistep")
    at.run()
    # fields that only matter for SGD / multistep are drawn now
    field(at, "number_input", K + "optim.lr").set_value(0.05)
    field(at, "number_input", K + "optim.momentum").set_value(0.8)
    field(at, "text_input", K + "schedule.milestones").set_value("1")
    field(at, "number_input", K + "train.max_steps_per_epoch").set_value(3)
    field(at, "multiselect", K + "eval.tta").select("hflip")
    field(at, "selectbox", "builder_add_transform").set_value("Rotate")
    button(at, "➕ Add step").click().run()
    uid = at.session_state["aug_steps"][0]["uid"]
    field(at, "text_input", f"aug:{uid}:params").set_value("limit: 10")
    button(at, "✔ Validate").click().run()

    assert not at.exception and texts(at.error) == []
    assert any("valid" in s for s in texts(at.success))
    config = at.session_state["builder_config"]
    assert config["name"] == "from the form"
    assert config["train"] | {} == {**config["train"], "epochs": 2, "batch_size": 32, "max_steps_per_epoch": 3}
    assert (config["optim"]["name"], config["optim"]["lr"], config["optim"]["momentum"]) == ("sgd", 0.05, 0.8)
    assert config["schedule"]["name"] == "multistep" and config["schedule"]["milestones"] == [1]
    assert config["augment"]["train"] == [{"name": "Rotate", "p": 0.5, "params": {"limit": 10}}]
    assert config["eval"]["tta"] == ["none", "hflip"]
    assert queries.list_runs(db_url).empty  # validating launches nothing

    button(at, "🚀 Launch").click().run()
    runs = queries.list_runs(db_url)
    assert len(runs) == 1
    run_id = int(runs["id"][0])
    assert at.query_params["run"] in (str(run_id), [str(run_id)])  # we are on the new run's page
    row = queries.get_run(db_url, run_id)
    assert row["config"] == config and row["tags"] == ["ui", "smoke"]
    assert wait_for_status(db_url, run_id, FINAL) == "completed"  # a real engine process trained it
    assert queries.get_run(db_url, run_id)["epochs_done"] == 2


def test_invalid_input_shows_errors_at_the_field_and_launches_nothing(db_url):
    at = open_page("new_run")
    field(at, "number_input", K + "train.batch_size").set_value(5000)
    button(at, "🚀 Launch").click().run()
    errors = texts(at.error)
    assert any(e.startswith("5000 is larger than the training split") for e in errors)  # next to the field
    assert any("Fix these before launching" in e and "Training › Batch size" in e for e in errors)  # summary
    assert any(t.label.startswith("Training ⚠️") for t in at.tabs)
    assert at.session_state["builder_tabs"].startswith("Training")  # the tab with the error is open
    assert queries.list_runs(db_url).empty

    field(at, "number_input", K + "train.batch_size").set_value(64)
    field(at, "number_input", K + "train.epochs").set_value(2)
    field(at, "selectbox", K + "schedule.name").set_value("multistep")
    at.run()
    field(at, "text_input", K + "schedule.milestones").set_value("5")
    button(at, "🚀 Launch").click().run()
    assert "5 is beyond the last epoch (2)" in texts(at.error)
    assert any(t.label.startswith("LR schedule ⚠️ 1") for t in at.tabs)
    assert queries.list_runs(db_url).empty

    field(at, "text_input", K + "schedule.milestones").set_value("one")
    at.run()  # text that does not parse is flagged at once, before any button
    assert any("'one' is not a number" in e for e in texts(at.error))
    button(at, "🚀 Launch").click().run()
    assert queries.list_runs(db_url).empty
    assert not at.exception


def test_a_number_out_of_range_blocks_validate_and_launch_and_is_never_swapped_for_an_old_value(db_url):
    at = open_page("new_run")
    field(at, "number_input", K + "optim.lr").set_value(-0.01)
    field(at, "text_input", K + "name").set_value("x" * 201)  # a second, schema-level error
    button(at, "✔ Validate").click().run()
    errors = texts(at.error)
    assert "-0.01 is out of range: must be > 0 and ≤ 10" in errors  # next to the field
    assert not any("greater than 0" in e for e in errors)  # said once, by the form, not again by the schema
    summary = next(e for e in errors if "Fix these before launching" in e)
    assert "Optimizer › Learning rate" in summary and "General › Run name" in summary  # listed with the rest
    assert not any("Ready to launch" in s for s in texts(at.success))
    assert at.session_state["builder_tabs"].startswith("Optimizer")  # the tab of the first error is open
    # what was typed stays what it is, in the widget and in the config: no earlier value behind it
    assert field(at, "number_input", K + "optim.lr").value == -0.01
    assert at.session_state["builder_config"]["optim"]["lr"] == -0.01

    button(at, "🚀 Launch").click().run()
    assert any("Fix these before launching" in e and "Learning rate" in e for e in texts(at.error))
    assert queries.list_runs(db_url).empty  # refused: no run row

    field(at, "number_input", K + "optim.lr").set_value(0.01)
    field(at, "text_input", K + "name").set_value("fixed")
    button(at, "✔ Validate").click().run()
    assert texts(at.error) == [] and any("Ready to launch" in s for s in texts(at.success))
    assert at.session_state["builder_config"]["optim"]["lr"] == 0.01
    assert queries.list_runs(db_url).empty and not at.exception


def test_clone_prefills_the_builder_from_a_past_run(db_url, tiny):
    source = tiny(
        **{
            "train.epochs": 4,
            "optim.name": "sgd",
            "optim.lr": 0.02,
            "schedule.name": "multistep",
            "schedule.milestones": [2, 3],
            "name": "parent",
        }
    )
    run_id = store.create_run(db_url, source, name="parent", tags=["t1"], notes="n1", status="completed")
    at = open_page("new_run", clone=run_id)
    assert field(at, "number_input", K + "train.epochs").value == 4
    assert field(at, "selectbox", K + "optim.name").value == "sgd"
    assert field(at, "text_input", K + "schedule.milestones").value == "2, 3"
    assert at.text_input(key="builder_tags").value == "t1"
    from engine.config import parse_config

    assert at.session_state["builder_config"] == parse_config(source).model_dump(mode="json")
    assert any(f"run #{run_id}" in s for s in texts(at.success) + texts(at.caption))


def test_a_preset_fills_the_form_for_the_chosen_dataset(db_url):
    presets = pytest.importorskip("control.presets")
    from engine.config import parse_config

    at = open_page("new_run")
    at.selectbox(key="builder_preset").set_value("fast-tiny")
    button(at, "Apply preset").click().run()
    expected = parse_config(presets.preset_config("fast-tiny", "digits", 8, 10)).model_dump(mode="json")
    assert at.session_state["builder_config"] == expected
    assert any("Applied preset fast-tiny for digits" in s for s in texts(at.success))  # shown once
    assert field(at, "number_input", K + "train.epochs").value == expected["train"]["epochs"]
    button(at, "✔ Validate").click().run()  # a preset is a config that passes every check
    assert texts(at.error) == [] and any("valid" in s for s in texts(at.success))


def test_uploaded_yaml_prefills_the_form_and_a_bad_file_is_refused(db_url, tiny):
    from engine.config import parse_config

    cfg = parse_config(tiny(**{"train.epochs": 5, "loss.label_smoothing": 0.1, "name": "from yaml"}))
    at = open_page("new_run")
    at.file_uploader(key="builder_upload").upload("exp.yaml", cfg.to_yaml().encode(), "application/x-yaml").run()
    assert not at.exception
    assert at.session_state["builder_config"] == cfg.model_dump(mode="json")
    assert any("Loaded exp.yaml" in s for s in texts(at.success))  # shown once
    assert field(at, "number_input", K + "train.epochs").value == 5
    assert field(at, "text_input", K + "name").value == "from yaml"

    at.file_uploader(key="builder_upload").set_value(("bad.yaml", b"optim:\n  lerning_rate: 0.1\n", "text/yaml")).run()
    assert any("not a valid config" in w for w in texts(at.warning))
    assert any("lerning_rate" in e for e in texts(at.error))
    assert at.session_state["builder_config"] == cfg.model_dump(mode="json")  # nothing was loaded


# ------------------------------------------------------------------------------- Runs
def test_runs_page_empty_state(db_url):
    at = open_page("runs")
    assert any("No runs yet" in i for i in texts(at.info))


def test_runs_table_selection_compare_and_annotations(in_lab):
    url, trained, failed = in_lab["url"], in_lab["trained"], in_lab["failed"]
    at = open_page("runs")
    table = at.dataframe[0].value
    assert table["id"].tolist() == [failed, trained]  # newest first
    row = table.set_index("id").loc[trained]
    lm = queries.latest_metrics(url, [trained]).set_index(["split", "name"])
    assert row["best_val_acc"] == pytest.approx(lm.loc[("val", "acc"), "best_value"])
    assert row["test_acc"] == pytest.approx(lm.loc[("test", "acc"), "value"])
    assert row["epochs"] == "2 / 2" and "completed" in row["status"] and list(row["tags"]) == ["baseline"]
    assert button(at, "📊 Compare (0)").disabled

    at.session_state["runs_table"] = {"selection": {"rows": [1], "columns": []}}  # tick the trained run
    at.run()
    assert not button(at, "🔎 Open").disabled and button(at, "▶ Resume").disabled
    at.text_input(key=f"runs_edit_tags_{trained}").set_value("baseline, keep")
    at.text_area(key=f"runs_edit_notes_{trained}").set_value("the reference")
    button(at, "Save").click().run()
    got = queries.get_run(url, trained)
    assert (got["tags"], got["notes"]) == (["baseline", "keep"], "the reference")

    at.session_state["runs_table"] = {"selection": {"rows": [0, 1], "columns": []}}
    at.run()
    assert button(at, "▶ Resume").disabled is False  # the failed run can be resumed
    button(at, "📊 Compare (2)").click().run()
    assert at.session_state["compare_ids"] == [failed, trained]
    assert at.query_params["runs"] in (f"{failed},{trained}", [f"{failed},{trained}"])


def test_runs_filters_and_delete(in_lab, tiny_module):
    url = in_lab["url"]
    doomed = store.create_run(url, tiny_module(**{"name": "doomed"}), name="doomed", status="stopped")
    at = open_page("runs")
    at.text_input(key="runs_search").set_value("doomed").run()
    assert at.dataframe[0].value["id"].tolist() == [doomed]
    at.session_state["runs_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    button(at, "Delete permanently").click().run()
    assert queries.get_run(url, doomed) is None
    assert not at.exception


# ------------------------------------------------------------------------------- Run detail
def test_plot_builders_on_a_real_run(in_lab):
    from dashboard import plots

    url, run_id = in_lab["url"], in_lab["trained"]
    history = queries.metric_history(url, [run_id])
    fig = plots.learning_curves(history)
    names = {(t.name, t.xaxis) for t in fig.data}
    assert {("train", "x"), ("val", "x"), ("train", "x2"), ("val", "x2"), ("lr", "x3"), ("images/s", "x4")} <= names
    wide = plots.history_wide(history)
    assert wide["epoch"].tolist() == [1, 2] and {"train_loss", "val_acc", "train_lr"} <= set(wide.columns)
    csv = plots.metrics_csv(history).splitlines()
    assert csv[0].startswith("epoch,") and len(csv) == 3

    table = plots.runs_table(queries.list_runs(url)).set_index("id")
    row = table.loc[run_id]
    assert row["epochs"] == "2 / 2" and "completed" in row["status"] and 0 < row["best_val_acc"] <= 1
    import socket

    assert row["where"] == f"local · {socket.gethostname()} · cpu"  # where the run executed

    tta = queries.tta_results(url, [run_id])
    frame = plots.tta_frame(tta, {"hflip": "flip"})
    assert set(frame["variant"]) == {"none", "hflip"}
    none = frame.set_index("variant").loc["none"]
    assert none["gain_pp"] == 0
    flip = frame.set_index("variant").loc["hflip"]
    assert flip["gain_pp"] == pytest.approx(100 * (flip["accuracy"] - none["accuracy"]))
    per_class = plots.tta_per_class_frame(tta, [str(i) for i in range(10)], "accuracy")
    assert list(per_class.columns) == ["none", "hflip"] and len(per_class) == 10
    ev = next(e for e in queries.evaluations(url, run_id) if e["split"] == "test")
    pc = plots.per_class_frame(ev["per_class"], [str(i) for i in range(10)])
    assert pc["support"].sum() == sum(map(sum, ev["confusion"]))
    ck = plots.checkpoints_frame(queries.checkpoints(url, run_id))
    assert {"best", "last", "epoch_0002"} <= set(ck["checkpoint"]) and ck["on disk"].all()


def test_run_detail_shows_a_completed_run(in_lab):
    url, run_id = in_lab["url"], in_lab["trained"]
    at = open_page("run_detail", run=run_id)
    assert at.title[0].value == f"Run #{run_id} · trained"
    metrics = {m.label: m.value for m in at.metric}
    history = queries.metric_history(url, [run_id])
    val_acc = history[(history.split == "val") & (history.name == "acc")].sort_values("epoch")["value"].tolist()
    assert metrics["Val accuracy"] == f"{100 * val_acc[-1]:.2f} %"
    assert metrics["Best val accuracy"] == f"{100 * max(val_acc):.2f} %"
    assert [t.label for t in at.tabs] == [
        "Confusion by epoch",
        "Test errors & gallery",
        "Per class",
        "TTA",
        "Data health",
        "Explain",
        "Calibration",
        "Export",
        "Checkpoints",
        "Log",
        "Config",
    ]
    # lazy tabs: the first one is computed, the others when opened
    assert {"detail_curves", f"detail_cm_{run_id}"} <= {c.key for c in at.get("plotly_chart")}
    assert at.select_slider(key=f"detail_cm_epoch_{run_id}").options == ["1", "2"]
    assert not [d for d in at.dataframe if "on disk" in d.value.columns]  # the Checkpoints tab is not built

    open_tab(at, "Test errors & gallery")
    assert f"detail_test_cm_{run_id}" in {c.key for c in at.get("plotly_chart")}

    # the gallery shows exactly the test images with the chosen true and predicted class
    test_eval = next(e for e in queries.evaluations(url, run_id, with_predictions=True) if e["split"] == "test")
    preds = test_eval["predictions"]
    t, p = 3, 3
    at.selectbox(key=f"detail_true_{run_id}").set_value(t)
    at.selectbox(key=f"detail_pred_{run_id}").set_value(p)
    at.run()
    expected = int(np.sum((np.array(preds["target"]) == t) & (np.array(preds["pred"]) == p)))
    shown = [el for el in at.image if el.proto.imgs]  # the Confusion by epoch tab has validation galleries too
    gallery = next(el for el in shown if el.proto.imgs[0].caption.startswith("✓ true 3 → 3"))
    top_loss = next(el for el in shown if ", loss " in el.proto.imgs[0].caption)
    assert len(gallery.proto.imgs) == min(expected, 48) > 0
    assert all(img.caption.startswith("✓ true 3 → 3") for img in gallery.proto.imgs)
    assert len(top_loss.proto.imgs) == 24

    per_class = next(d.value for d in open_tab(at, "Per class").dataframe if "f1" in d.value.columns)
    assert len(per_class) == 10 and per_class["f1"].tolist() == pytest.approx(test_eval["per_class"]["f1"])
    tta = next(d.value for d in open_tab(at, "TTA").dataframe if "variant" in d.value.columns)
    assert set(tta["variant"]) == {"none", "hflip"}
    ckpts = next(d.value for d in open_tab(at, "Checkpoints").dataframe if "on disk" in d.value.columns)
    assert {"best", "last", "epoch_0001", "epoch_0002"} <= set(ckpts["checkpoint"])
    assert any("epoch 2" in c for c in texts(open_tab(at, "Log").code))  # the log tab shows the run's log


def test_run_detail_evaluates_a_checkpoint_on_test(in_lab):
    url, run_id = in_lab["url"], in_lab["trained"]
    at = open_page("run_detail", run=run_id)
    open_tab(at, "Checkpoints")
    at.selectbox(key=f"detail_ckpt_{run_id}").set_value("epoch_0001")
    button(at, "🧪 Evaluate on test").click().run()  # python -m engine evaluate, in a background process
    assert not at.exception
    deadline = time.monotonic() + 300
    while not (texts(at.success) or texts(at.error)) and time.monotonic() < deadline:
        time.sleep(0.5)  # the page returned at once; each run polls the evaluation, as the live fragment does
        at.run()
    assert any("test accuracy of epoch_0001" in s.replace("\\", "") for s in texts(at.success)), texts(at.error)
    evals = [e for e in queries.evaluations(url, run_id) if e["split"] == "test"]
    assert [e["checkpoint"] for e in evals][-1] == "epoch_0001" and evals[-1]["epoch"] == 1
    # the test-side views can now show it, and it is kept: evaluating it again is off
    picker = at.selectbox(key=f"detail_test_ckpt_{run_id}")
    assert picker.value == "best"
    assert f"epoch_0001 (epoch 1) — test accuracy {evals[-1]['accuracy']:.2%}" in picker.options
    picker.set_value("epoch_0001").run()
    per_class = open_tab(at, "Per class")
    assert any("epoch_0001 checkpoint, epoch 1" in c.value for c in per_class.caption)  # it shows that evaluation
    open_tab(at, "Checkpoints")
    assert at.selectbox(key=f"detail_ckpt_{run_id}").value == "epoch_0001"
    assert button(at, "🧪 Evaluate on test").disabled


def test_run_detail_shows_a_failed_run_and_picks_the_newest_by_default(in_lab):
    url, failed = in_lab["url"], in_lab["failed"]
    at = open_page("run_detail")  # no ?run: newest running, else newest
    assert queries.default_run_id(url) == failed
    assert at.title[0].value == f"Run #{failed} · broken"
    assert any("out of luck" in e for e in texts(at.error))
    assert any("No test" in i or "appear" in i for i in texts(at.info))
    assert not button(at, "▶ Resume").disabled and button(at, "⏹ Stop").disabled


def test_stop_and_resume_a_live_run_from_its_page(db_url, tiny, monkeypatch):
    from control.launcher import launch_run, stop_run

    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.3}))  # slow enough to stop mid-run
    run_id = launch_run(db_url, tiny(**{"train.epochs": 3, "train.max_steps_per_epoch": 10}))
    try:
        deadline = time.monotonic() + 120
        while queries.get_run(db_url, run_id)["device"] is None:  # the engine itself says it is training
            assert time.monotonic() < deadline and queries.get_run(db_url, run_id)["status"] not in FINAL
            time.sleep(0.2)
        at = open_page("run_detail", run=run_id)
        assert not button(at, "⏹ Stop").disabled and button(at, "▶ Resume").disabled
        button(at, "⏹ Stop").click().run()
        assert queries.get_run(db_url, run_id)["status"] == "stopped"
        assert "stopped" in at.markdown[0].value or any("stopped" in m.value for m in at.markdown)
        assert not button(at, "▶ Resume").disabled
        button(at, "▶ Resume").click().run()
        assert queries.get_run(db_url, run_id)["status"] in ("queued", "running")
    finally:
        stop_run(db_url, run_id)
    assert queries.get_run(db_url, run_id)["status"] in FINAL
    assert os.environ.get("LAB_FAULT")  # the fault only ever reached this test's engine processes
