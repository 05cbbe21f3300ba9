"""What a new user hit: state leaking from a cloned run, widgets that stop following live runs, pages that
stay blank, children left as zombies, transforms that are not image transforms, literal "None" in tables.
AppTest against a real SQLite lab, real rows written the way the engine writes them."""

from __future__ import annotations

import os

import numpy as np
import pytest

from db import queries, store
from tests import test_pages_core as core
from tests.conftest import wait_for
from tests.test_pages_core import button, field, open_page, texts

# The core page tests' lab (a run trained by the real engine, with checkpoints), shared as fixtures.
lab, in_lab, tiny_module = core.lab, core.in_lab, core.tiny_module

K = "cfg:"


def _matrix(n: int = 10, hits: int = 5) -> list[list[int]]:
    return (np.eye(n, dtype=int) * hits).tolist()


def _epoch(url: str, run_id: int, epoch: int) -> None:
    """One finished epoch, written the way the DB sink writes it."""
    metrics = {("val", "acc"): 0.5 + epoch / 100, ("val", "loss"): 1.0 / epoch, ("train", "loss"): 1.0 / epoch}
    store.add_epoch(url, run_id, epoch, metrics, {"val": _matrix(hits=epoch)})


# ------------------------------------------------------------------------------- clone lineage
def test_a_preset_after_a_clone_drops_the_clones_tags_notes_and_parent(db_url, tiny):
    source = store.create_run(db_url, tiny(name="three"), name="three", tags=["from3"], notes="n3", status="completed")
    at = open_page("new_run", clone=source)
    assert at.text_input(key="builder_tags").value == "from3"
    assert at.session_state["builder_parent"] == source
    del at.query_params["clone"]  # back on New run from the sidebar
    at.run()
    field(at, "selectbox", K + "data.dataset").set_value("digits").run()
    at.selectbox(key="builder_preset").set_value("fast-tiny").run()
    button(at, "Apply preset").click().run()
    assert not at.exception
    assert at.text_input(key="builder_tags").value == ""
    assert at.text_input(key="builder_notes").value == ""
    assert "builder_parent" not in at.session_state
    assert not any("Cloned from" in c for c in texts(at.caption))
    # Cloning the same run again prefills again (the earlier clone is forgotten, not "already applied").
    at.query_params["clone"] = str(source)
    at.run()
    assert at.text_input(key="builder_tags").value == "from3" and at.session_state["builder_parent"] == source


def test_tags_the_user_typed_after_a_clone_survive_a_preset(db_url, tiny):
    source = store.create_run(db_url, tiny(name="three"), name="three", tags=["from3"], status="completed")
    at = open_page("new_run", clone=source)
    at.text_input(key="builder_tags").set_value("mine").run()
    at.selectbox(key="builder_preset").set_value("fast-tiny").run()
    button(at, "Apply preset").click().run()
    assert at.text_input(key="builder_tags").value == "mine"
    assert "builder_parent" not in at.session_state


def test_no_preset_is_chosen_until_the_user_picks_one(db_url):
    at = open_page("new_run")
    picker = at.selectbox(key="builder_preset")
    assert picker.value is None
    assert picker.options[0].startswith("fast-")  # general-purpose starts before one-dataset recipes


# ------------------------------------------------------------------------------- live run detail
def test_the_confusion_epoch_slider_follows_new_epochs_until_the_user_moves_it(db_url, tiny):
    run_id = store.create_run(db_url, tiny(**{"train.epochs": 6}), name="live", status="running")
    for e in (1, 2):
        _epoch(db_url, run_id, e)
    at = open_page("run_detail", run=run_id)
    key = f"detail_cm_epoch_{run_id}"
    assert at.select_slider(key=key).value == 2
    _epoch(db_url, run_id, 3)
    at.run()
    assert at.select_slider(key=key).value == 3  # followed the newest epoch
    at.select_slider(key=key).set_value(1).run()
    _epoch(db_url, run_id, 4)
    at.run()
    assert at.select_slider(key=key).value == 1  # the user's choice is kept
    at.select_slider(key=key).set_value(4).run()
    _epoch(db_url, run_id, 5)
    at.run()
    assert at.select_slider(key=key).value == 5  # back on the newest: follows again
    assert not at.exception


# ------------------------------------------------------------------------------- compare opened live
def test_compare_from_the_runs_table_paints_while_a_run_trains(db_url, tiny):
    done = store.create_run(db_url, tiny(name="done"), name="done", status="completed")
    live = store.create_run(db_url, tiny(name="live"), name="live", status="running")
    store.update_run(db_url, live, pid=os.getpid(), backend="local")  # a live process on this host
    for run_id in (done, live):
        for e in (1, 2):
            _epoch(db_url, run_id, e)
    at = open_page("runs")
    at.session_state["runs_table"] = {"selection": {"rows": [0, 1], "columns": []}}
    at.run()
    button(at, "📊 Compare (2)").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(t.value == "Compare runs" for t in at.title)
    assert at.multiselect(key="compare_select").value == [live, done]
    charts = {c.key for c in at.get("plotly_chart")}
    # Only the open tab is computed: the curves, not the confusion grid, per-class or TTA figures.
    assert charts == {"compare_curves"}
    assert any("Live: curves refresh" in c for c in texts(at.caption))


# ------------------------------------------------------------------------------- reaped engines
def _gone(pid: int) -> bool:
    """The process has exited and been reaped (a zombie keeps its /proc entry, state Z)."""
    return not os.path.exists(f"/proc/{pid}")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to see process states")
def test_a_finished_engine_is_reaped_without_any_page_polling(db_url, tiny):
    from control import launcher
    from tests.test_pages_core import wait_for_status

    before = set(launcher._CHILDREN)
    cfg = tiny(**{"train.epochs": 1, "train.max_steps_per_epoch": 2, "name": "reaped"})
    run_id = launcher.launch_run(db_url, cfg)
    spawned = set(launcher._CHILDREN) - before  # the processes this dashboard process started
    assert spawned
    assert wait_for_status(db_url, run_id, ("completed", "failed")) == "completed"
    for pid in spawned:
        wait_for(lambda pid=pid: _gone(pid), timeout=60, what=f"engine {pid} to exit and be reaped")


# ------------------------------------------------------------------------------- transform picker
NOT_IMAGE_TRANSFORMS = [
    "DualTransform",
    "ImageOnlyTransform",
    "Transform3D",
    "CenterCrop3D",
    "CoarseDropout3D",
    "BBoxSafeRandomCrop",
    "MaskDropout",
    "TimeMasking",
    "TextImage",
    "FDA",
]


def test_the_transform_picker_offers_only_single_image_transforms(db_url):
    at = open_page("new_run")
    at.session_state["builder_section"] = "augment"
    at.run()
    offered = field(at, "selectbox", "builder_add_transform").options
    assert {"HorizontalFlip", "Rotate", "RandomBrightnessContrast", "PadRandomCrop", "CoarseDropout"} <= set(offered)
    assert not set(NOT_IMAGE_TRANSFORMS) & set(offered)


@pytest.mark.parametrize("name", ["DualTransform", "CenterCrop3D", "MaskDropout", "TimeMasking"])
def test_a_step_that_is_not_an_image_transform_is_refused_at_its_field(db_url, tiny, name):
    from control.preflight import validate_all

    cfg = tiny(**{"augment.train": [{"name": "Rotate", "p": 0.5, "params": {"limit": 10}}, {"name": name, "p": 1.0}]})
    _, errors = validate_all(cfg, db_url)
    assert [field for field, _ in errors] == ["augment.train.1"] and name in errors[0][1]


# ------------------------------------------------------------------------------- words
def test_choices_read_as_words_not_config_codes(db_url):
    at = open_page("new_run")
    loss = field(at, "selectbox", K + "loss.name")
    assert loss.value == "ce"  # the config keeps its value...
    assert loss.options[0] == "cross-entropy" and "ce" not in loss.options  # ...shown as words


def test_mixup_captions_put_the_share_after_the_class_name():
    from dashboard.augment_preview import soft_label_caption

    row = np.zeros(10)
    row[[0, 5]] = [0.88, 0.12]
    assert soft_label_caption(row, [str(i) for i in range(10)]) == "0 88% + 5 12%"


def test_streamlits_deploy_button_is_hidden():
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "minimal"


def test_a_command_line_run_without_a_name_is_named_after_its_config_file(db_url, tmp_path, tiny):
    from tests.test_cli import engine_cli, write_yaml

    cfg = tiny(**{"train.epochs": 1, "train.max_steps_per_epoch": 2})
    cfg.pop("name")
    proc = engine_cli("train", str(write_yaml(tmp_path / "digits-baseline.yaml", cfg)), "--db", db_url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = queries.list_runs(db_url).to_dict("records")
    assert run["name"] == "digits-baseline"


def test_the_command_line_refuses_a_step_that_is_not_an_image_transform(db_url, tmp_path, tiny):
    from tests.test_cli import engine_cli, write_yaml

    cfg = tiny(**{"augment.train": [{"name": "DualTransform", "p": 1.0}]})
    proc = engine_cli("validate", str(write_yaml(tmp_path / "bad.yaml", cfg)), "--db", db_url)
    assert proc.returncode == 2 and "augment.train.0: DualTransform is a base class" in proc.stderr


# ------------------------------------------------------------------------------- layout
def test_tables_show_a_dash_not_the_word_none_for_missing_values(db_url, tiny):
    done = store.create_run(db_url, tiny(name="done"), name="done", status="completed")
    _epoch(db_url, done, 1)
    failed = store.create_run(db_url, tiny(name="early"), status="running")
    store.mark_ended(db_url, failed, "failed", error="RuntimeError: before the first epoch")
    at = open_page("runs")
    table = at.dataframe[0]
    assert table.value.set_index("id").loc[failed, ["best_val_acc", "test_acc"]].isna().all()  # missing values...
    assert table.proto.placeholder == "–"  # ...shown as a dash
    at = open_page("datasets")
    assert all(d.proto.placeholder == "–" for d in at.dataframe)


def test_the_config_diff_shows_only_fields_that_take_effect(tiny):
    from dashboard.plots_compare import config_diff

    a = tiny(**{"model.widths": [32, 64], "optim.lr": 0.01})
    b = tiny(**{"model.widths": [16, 32]})
    diff = config_diff({"#1": a, "#2": b})
    assert list(diff.index) == ["optim.lr"]  # small_cnn has no stages: its widths change nothing
    resnet = tiny(**{"model.name": "resnet", "model.widths": [16, 32]})
    assert "model.widths" in config_diff({"#1": a, "#3": resnet}).index  # ...but they do for a resnet


# ------------------------------------------------------------------------------- compare headline
def test_compares_best_run_is_chosen_by_the_users_metric_and_ties_are_broken_visibly(db_url, tiny):
    from tests.test_pages_extra import _open_tab

    a = store.create_run(db_url, tiny(name="a"), name="a", status="completed")
    b = store.create_run(db_url, tiny(name="b"), name="b", status="completed")
    for run_id, loss in ((a, 0.30), (b, 0.10)):  # both 100 % on validation; b is more confident
        store.add_epoch(db_url, run_id, 1, {("val", "acc"): 1.0, ("val", "loss"): loss, ("train", "loss"): 0.5})
    at = open_page("compare", runs=f"{a},{b}")
    _open_tab(at, "Best / final")
    headline = " ".join(texts(at.markdown)).replace("\\", "")  # labels are escaped markdown
    assert f"Best run by best val acc: **#{b} b**" in headline and f"tied with #{a} a" in headline
    assert "broken by best val loss (0.1000)" in headline
    at.selectbox(key="compare_best_by").set_value("final val loss").run()
    headline = " ".join(texts(at.markdown)).replace("\\", "")
    assert f"Best run by final val loss: **#{b} b** (0.1000)." in headline and "tied" not in headline


# ------------------------------------------------------------------------------- augmentation defaults
def test_the_augmentation_browsers_first_pipeline_fits_8_pixel_digits(db_url):
    at = open_page("augmentations")
    at.radio(key="aug_source").set_value("Edit here").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="aug_dataset").value == "digits"
    text = at.text_area(key="aug_yaml").value
    assert "PadRandomCrop" in text and "padding: 1" in text  # an eighth of 8 px, not 4 px of it


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="Fashion-MNIST not installed")
def test_fashion_mnist_arrays_are_writable_so_torch_does_not_warn_in_every_log():
    import warnings

    import torch

    from engine.data import load_arrays, parse_dataset_ref

    data = load_arrays(parse_dataset_ref("fashion_mnist"))
    assert data.train_x.flags.writeable and data.test_x.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "The given NumPy array is not writable" would raise here
        torch.from_numpy(data.train_x[:4])


# ------------------------------------------------------------------------------- drafts
def test_a_browser_reload_keeps_the_half_built_run(db_url, tiny):
    parent = store.create_run(db_url, tiny(name="p"), name="p", tags=["t"], status="completed")
    at = open_page("new_run", clone=parent)
    field(at, "number_input", K + "train.epochs").set_value(7).run()
    at.text_input(key="builder_notes").set_value("half built").run()
    draft = at.query_params["draft"]
    draft = draft[0] if isinstance(draft, list) else draft
    reloaded = open_page("new_run", clone=parent, draft=draft)  # a new session on the same address
    assert any("Restored the run you were building" in s for s in texts(reloaded.success))  # shown once
    assert field(reloaded, "number_input", K + "train.epochs").value == 7  # the edit, not the clone's value
    assert reloaded.text_input(key="builder_notes").value == "half built"
    assert reloaded.session_state["builder_parent"] == parent
    fresh = open_page("new_run", draft="0123456789ab")  # an unknown draft: the defaults, no error
    from dashboard.forms import default_config

    assert field(fresh, "number_input", K + "train.epochs").value == default_config()["train"]["epochs"]


# ------------------------------------------------------------------------------- background evaluation
def test_evaluating_a_checkpoint_runs_in_the_background_with_progress(in_lab):
    import signal
    import time

    from dashboard import actions

    url, run_id = in_lab["url"], in_lab["trained"]
    at = open_page("run_detail", run=run_id)
    core.open_tab(at, "Checkpoints")
    at.selectbox(key=f"detail_ckpt_{run_id}").set_value("last")
    button(at, "🧪 Evaluate on test").click().run()
    job = actions.evaluation_job(url, run_id)
    assert job is not None and job.running  # the page came back while the engine still evaluates
    os.kill(job.proc.pid, signal.SIGSTOP)  # hold it still while we look at the page
    try:
        at.run()
        assert any("in the background" in i for i in texts(at.info))
        assert button(at, "🧪 Evaluate on test").disabled  # one evaluation per run at a time
        assert any(t.value.startswith("Run #") for t in at.title)  # the rest of the page is there
    finally:
        os.kill(job.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 300
    while not (texts(at.success) or texts(at.error)) and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert any("test accuracy of last" in s.replace("\\", "") for s in texts(at.success)), texts(at.error)
    assert actions.evaluation_job(url, run_id) is None
