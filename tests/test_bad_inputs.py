"""Inputs crafted to hurt: images and image sizes that would need tens of GB, refused or bounded;
validation and registration measured from the child process that does the loading."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import attack_tally
from tests.lifecycle_support import python_proc
from tests.test_faults import write_digits_folder

# What loading, checking and summarising the crafted datasets below may take, at most, in the child.
PEAK_RSS_BOUND_MB = 1200


def _measured(code: str, url: str) -> dict:
    """Run `code` (which sets `out`) in a stand-in dashboard process; its result plus the peak RSS of
    the process itself and of the children it waited for (the checks' child), in MB."""
    probe = (
        "import json, resource\n"
        f"{code}\n"
        "print(json.dumps({'out': out,"
        " 'self_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
        " 'child_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
    )
    proc = python_proc(probe, env={"LAB_DB_URL": url})
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    measured = json.loads(stdout.strip().splitlines()[-1])
    print("peak RSS (MB):", {k: round(v) for k, v in measured.items() if k.endswith("_mb")})
    return measured


def _folder_with_one_big_image(root: Path, side: int) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    Image.new("RGB", (side, side), (200, 10, 10)).save(root / "a" / "big.png")  # a few KB on disk
    return root


REGISTER = (
    "from control.dataset_registry import register_dataset\n"
    "from engine.data import DatasetError\n"
    "try:\n"
    "    out = register_dataset(None, 'crafted', 'imagefolder', {path!r}, {options!r})['image_sizes']\n"
    "except DatasetError as exc:\n"
    "    out = 'DatasetError: ' + str(exc)\n"
)


@pytest.mark.attack("dataset inputs")
def test_one_huge_image_among_small_ones_is_loaded_at_a_bounded_size_in_a_bounded_child(db_url, tmp_path):
    root = _folder_with_one_big_image(tmp_path / "mixed", 3000)  # 11 images: 27 MB decoded, 1 GB+ as float64 today
    m = _measured(REGISTER.format(path=str(root), options={}), db_url)
    assert m["out"]["loaded_as"] == [512, 512] and m["out"]["width"][2] == 3000
    attack_tally.peak(
        "registering 10 small images and one 3000x3000 PNG (checks' child)", m["child_mb"], PEAK_RSS_BOUND_MB
    )
    assert 0 < m["child_mb"] < PEAK_RSS_BOUND_MB, m


@pytest.mark.attack("dataset inputs")
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_IMAGE_PIXELS", "4000000")
    root = _folder_with_one_big_image(tmp_path / "bomb", 4000)
    m = _measured(REGISTER.format(path=str(root), options={}), db_url)
    assert m["out"].startswith("DatasetError: image ") and "4000x4000 pixels, more than the 4,000,000" in m["out"]
    attack_tally.peak("refusing a 4000x4000 PNG over the pixel limit from its header", m["child_mb"], PEAK_RSS_BOUND_MB)
    assert m["child_mb"] < PEAK_RSS_BOUND_MB, m


@pytest.mark.attack("dataset inputs")
def test_a_decompression_bomb_is_a_dataset_error_not_a_traceback(tmp_path, monkeypatch):
    from engine.data import DatasetError, DatasetSpec, load_arrays

    monkeypatch.setenv("LAB_MAX_IMAGE_PIXELS", str(10**12))  # leave it to PIL's own bomb check
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    root = _folder_with_one_big_image(tmp_path / "bomb", 100)
    with pytest.raises(DatasetError, match="unreadable image .*big.png.*decompression bomb"):
        load_arrays(DatasetSpec("imagefolder", str(root)))


@pytest.mark.parametrize("size", [-5, 0, 4, 5000, 2.5, True, "64"])
@pytest.mark.attack("dataset inputs")
def test_a_negative_huge_or_non_integer_image_size_is_a_field_message(db_url, tmp_path, size):
    from control.dataset_registry import register_dataset
    from engine.data import DatasetError

    root = _folder_with_one_big_image(tmp_path / "f", 40)
    with pytest.raises(DatasetError, match="image_size must be a whole number of pixels from 8 to 1024"):
        register_dataset(db_url, "x", "imagefolder", str(root), {"image_size": size})


@pytest.mark.attack("dataset inputs")
def test_validating_a_launch_at_a_large_image_size_runs_in_a_bounded_child(db_url, tmp_path):
    from db import store

    root = write_digits_folder(tmp_path / "digits", per_class=180)
    store.upsert_dataset(db_url, "digits384", "imagefolder", str(root), {"image_size": 384})
    code = (
        "from control.launcher import launch_run\n"
        "from tests.conftest import tiny_config\n"
        f"out = launch_run({db_url!r}, tiny_config(**{{'data.dataset': 'digits384'}}), start=False)\n"
    )
    m = _measured(code, db_url)
    assert m["out"] == 1
    attack_tally.peak(
        "validating a launch on the digits at 384 px (checks' child)", m["child_mb"], PEAK_RSS_BOUND_MB + 800
    )
    assert 0 < m["child_mb"] < PEAK_RSS_BOUND_MB + 800, m  # torch and a model too


@pytest.mark.attack("dataset inputs")
def test_a_check_that_needs_more_than_the_memory_limit_says_so(db_url, tmp_path, monkeypatch):
    from control.dataset_registry import register_dataset
    from engine.data import DatasetError

    monkeypatch.setenv("LAB_VALIDATE_MEMORY_GB", "0.4")
    root = write_digits_folder(tmp_path / "digits", per_class=180)
    with pytest.raises(DatasetError, match="needs more than 0.4 GB of memory .*LAB_VALIDATE_MEMORY_GB"):
        register_dataset(db_url, "big", "imagefolder", str(root), {"image_size": 1024})
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 < 2000


# ------------------------------------------------------------------ silent coercions and tracebacks refused
def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": _images(6), "labels": np.array([0, 1, 0.5, 1, 0, 1])}, "labels must be whole numbers"),
        ({"images": _images(6), "labels": np.array([0, 1, np.nan, 1, 0, 1])}, "labels must be whole numbers"),
        (
            {"x_train": _images(6), "y_train": np.array([0, 1] * 3), "x_test": _images(2), "y_test": np.array([0, 7])},
            r"test labels \[7\] never occur in the training labels",
        ),
        (
            {"images": np.where(_images(6) > 128, np.nan, 0.5).astype(np.float32), "labels": np.array([0, 1] * 3)},
            "NaN or infinite pixel values",
        ),
    ],
    ids=["float labels", "nan labels", "test-only class", "nan pixels"],
)
@pytest.mark.attack("dataset inputs")
def test_arrays_that_would_be_coerced_silently_are_refused(tmp_path, arrays, message):
    from engine.data import DatasetError, DatasetSpec, load_arrays

    with pytest.raises(DatasetError, match=message):
        load_arrays(DatasetSpec("npz", _npz(tmp_path / "d.npz", **arrays)))


def _csv_lab(root: Path, lines: list[str]) -> Path:
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(root / f"{i}.png")
    (root / "labels.csv").write_text("path,label,split\n" + "\n".join(lines) + "\n")
    return root / "labels.csv"


@pytest.mark.parametrize(
    "lines, message",
    [
        (["0.png,a,train", "1.png,b,train", "2.png"], "line 4: every row needs a 'path' and a 'label'"),
        (["0.png,a,train", "1.png,b,train", "2.png,,train"], "line 4: every row needs"),
        (["0.png,a,train", "1.png,b,train", "2.png,c,test"], "labels c never occur in the training rows"),
    ],
    ids=["short row", "empty label", "test-only label"],
)
@pytest.mark.attack("dataset inputs")
def test_a_csv_row_without_a_label_or_with_an_unknown_test_label_is_named(tmp_path, lines, message):
    from control.dataset_registry import load_checked
    from engine.data import DatasetError

    with pytest.raises(DatasetError, match=message):
        load_checked("csv", str(_csv_lab(tmp_path / "c", lines)), {})


@pytest.mark.attack("dataset inputs")
def test_class_folders_or_images_linked_outside_the_dataset_are_refused(tmp_path):
    from engine.data import DatasetError, DatasetSpec, load_arrays

    root = _folder_with_one_big_image(tmp_path / "ds", 40)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(outside / "secret.png")
    (root / "c").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetError, match=r"ds/c links outside the dataset folder"):
        load_arrays(DatasetSpec("imagefolder", str(root)))
    (root / "c").unlink()
    (root / "a" / "linked.png").symlink_to(outside / "secret.png")
    with pytest.raises(DatasetError, match=r"linked.png links outside the dataset folder"):
        load_arrays(DatasetSpec("imagefolder", str(root)))


@pytest.mark.attack("dataset inputs")
def test_a_test_class_folder_missing_from_training_is_named(tmp_path):
    from engine.data import DatasetError, DatasetSpec, load_arrays

    _folder_with_one_big_image(tmp_path / "ds" / "train", 40)
    _folder_with_one_big_image(tmp_path / "ds" / "test", 40)
    (tmp_path / "ds" / "test" / "zebra").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "ds" / "test" / "zebra" / "z.png")
    with pytest.raises(DatasetError, match="class 'zebra' is not one of the training classes"):
        load_arrays(DatasetSpec("imagefolder", str(tmp_path / "ds")))


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    "text, field, message",
    [
        ("optim:\n  weight_decay: true\n", "optim.weight_decay", "valid number"),
        ("train:\n  seed: 0.0\n", "train.seed", "valid integer"),
        ("train:\n  seed: true\n", "train.seed", "valid integer"),
        ("train:\n  epochs: 3\n  epochs: 5\n", "(root)", "the key 'epochs' appears twice"),
        ("name: a\nname: b\n", "(root)", "the key 'name' appears twice"),
        ("notes: " + "[" * 5000 + "]" * 5000 + "\n", "(root)", "nested too deeply"),
    ],
    ids=["bool weight decay", "float seed", "bool seed", "duplicate key", "duplicate top key", "deep"],
)
@pytest.mark.attack("fuzzed configs")
def test_uploaded_yaml_that_would_be_coerced_or_crash_is_one_field_message(text, field, message):
    from engine.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError) as exc:
        ExperimentConfig.from_yaml(text)
    assert [(f, m) for f, m in exc.value.errors if f == field and message in m], exc.value.errors


@pytest.mark.attack("fuzzed configs")
def test_a_duplicate_key_in_a_json_config_file_is_refused(tmp_path):
    from engine.config import ConfigError, ExperimentConfig

    path = tmp_path / "c.json"
    path.write_text('{"train": {"epochs": 3, "epochs": 4}}')
    with pytest.raises(ConfigError, match="the key 'epochs' appears twice"):
        ExperimentConfig.from_file(path)
    assert ExperimentConfig.from_yaml("optim:\n  weight_decay: 0\ntrain:\n  seed: 3\n").optim.weight_decay == 0.0


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, None], ids=["empty", "garbage", "missing"])
@pytest.mark.attack("crash and bad checkpoints")
def test_evaluating_an_unreadable_checkpoint_is_one_field_message(db_url, tmp_path, content):
    import subprocess
    import sys

    from db import store
    from tests.conftest import tiny_config
    from tests.lifecycle_support import ROOT

    run_id = store.create_run(db_url, tiny_config(), status="completed")
    path = tmp_path / "best.pt"
    if content is not None:
        path.write_bytes(content)
    store.add_checkpoint(db_url, run_id, 1, "best", str(path))
    res = subprocess.run(
        [sys.executable, "-m", "engine", "evaluate", "--run-id", str(run_id), "--checkpoint", "best"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "LAB_DB_URL": db_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"--checkpoint: {path} cannot be read (")


# ------------------------------------------------------------------ no silent coercion, any field
def _strict_leaves(model, prefix: str = ""):
    """(dotted path, kind) of every number or switch in the schema, walked from the pydantic model itself:
    kind is int / float / bool for a field, int_item / float_item for a list's (or tuple's) elements and
    int_choice for a Literal with int members. A step of augment.train is reached as augment.train.0."""
    import types
    import typing

    from pydantic import BaseModel

    def bare(tp):
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
            return bare(args[0])
        return tp

    for name, info in model.model_fields.items():
        path, tp = f"{prefix}{name}", bare(info.annotation)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            yield from _strict_leaves(tp, path + ".")
        elif tp in (int, float, bool):
            yield path, tp.__name__
        elif origin is typing.Literal and any(type(a) is int for a in args):
            yield path, "int_choice"
        elif origin in (list, tuple) and args:
            inner = bare(args[0])
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _strict_leaves(inner, path + ".0.")
            elif inner in (int, float):
                yield path, f"{inner.__name__}_item"


def _leaves():
    from engine.config import ExperimentConfig

    return list(_strict_leaves(ExperimentConfig))


# what each kind must refuse (a value pydantic's lax mode would have turned into another one)
REFUSED = {
    "int": [True, 2.0, "2"],
    "float": [True, "0.5"],
    "bool": [1, 0, "true", 1.0],
    "int_item": [True, 2.0],
    "float_item": [True, "0.5"],
    "int_choice": [True],
}


def _config_with(path: str, value) -> dict:
    """The tiny digits config (with one augmentation step, augment.train.0) and `value` at `path`."""
    from tests.conftest import tiny_config

    cfg = tiny_config(**{"augment.train": [{"name": "HorizontalFlip", "p": 0.5}]})
    *parents, leaf = path.split(".")
    node = cfg
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[leaf] = value
    return cfg


def test_the_walk_finds_every_kind_of_number_and_switch():
    kinds = dict(_leaves())
    # the walk is the test's coverage: it must see nested sections, optional fields, lists and steps
    assert len(kinds) > 80
    assert kinds["train.epochs"] == "int" and kinds["data.image_size"] == "int"  # optional
    assert kinds["optim.lr"] == "float" and kinds["data.stratified"] == "bool"
    assert kinds["regularize.ema.decay"] == "float" and kinds["model.head.dropout"] == "float"  # nested twice
    assert kinds["model.widths"] == "int_item" and kinds["optim.betas"] == "float_item"
    assert kinds["augment.train.0.p"] == "float" and kinds["data.channels"] == "int_choice"


@pytest.mark.parametrize("path, kind", _leaves(), ids=[p for p, _ in _leaves()])
@pytest.mark.attack("fuzzed configs")
def test_every_number_and_switch_refuses_a_value_it_would_have_coerced(path, kind):
    from engine.config import ConfigError, ExperimentConfig, parse_config

    for bad in REFUSED[kind]:
        value = [bad] if kind.endswith("_item") else bad
        with pytest.raises(ConfigError) as exc:
            parse_config(_config_with(path, value))
        where = f"{path}.0" if kind.endswith("_item") else path
        mine = [m for f, m in exc.value.errors if f == where]
        assert len(mine) == 1, (bad, exc.value.errors)  # one message, on the field itself
        assert "\n" not in mine[0] and mine[0].startswith("Input should be"), mine[0]
        assert mine[0].endswith(f"got {json.dumps(bad)}"), mine[0]  # says what was given
    # the type's own values still pass: the default, as written; a float field also takes a whole number
    default = ExperimentConfig().model_dump(mode="json")
    for part in path.replace(".0.", ".").split("."):
        default = default.get(part) if isinstance(default, dict) else None
    if default is not None and kind != "int_choice" and ".0." not in path:
        assert parse_config(_config_with(path, default)) is not None
    if kind == "float":
        whole = next((v for v in (1, 0) if _accepts(path, v)), None)
        if whole is not None:
            got = parse_config(_config_with(path, whole))
            assert _read(got, path) == float(whole) and isinstance(_read(got, path), float)


def _accepts(path: str, value) -> bool:
    from engine.config import ConfigError, parse_config

    try:
        parse_config(_config_with(path, float(value)))
    except ConfigError:  # out of the field's range, or a rule of another field
        return False
    return True


def _read(cfg, path: str):
    node = cfg
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def test_yaml_scientific_notation_is_a_float_in_every_yaml_entry_point():
    from dashboard.aug_params import read_value
    from dashboard.forms import config_from_upload, parse_params
    from dashboard.study_design import parse_levels
    from engine.config import ExperimentConfig

    cfg = ExperimentConfig.from_yaml(
        "optim:\n  lr: 1e-3\n  weight_decay: 5E-4\n  eps: 1.0e-8\nschedule:\n  eta_min: 0\n"
    )
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.eps, cfg.schedule.eta_min) == (1e-3, 5e-4, 1e-8, 0.0)
    assert ExperimentConfig.from_yaml("optim:\n  lr: 1\n").optim.lr == 1.0  # an int is a float's value
    uploaded, errors = config_from_upload(b"optim:\n  lr: 3e-4\ntrain:\n  epochs: 2\n")
    assert errors == [] and uploaded["optim"]["lr"] == 3e-4 and uploaded["train"]["epochs"] == 2
    assert parse_levels("1e-3, 1e-2, 10") == ([1e-3, 1e-2, 10], None)
    assert parse_params("eps: 1e-6") == {"eps": 1e-6}
    assert read_value({"aug:s1:v:eps": "1e-6"}, "s1", "eps", "json") == 1e-6
    # a quoted number stays text, and text is no number
    errors = config_from_upload(b'optim:\n  lr: "1e-3"\n')[1]
    assert errors == [("optim.lr", 'Input should be a valid number, got "1e-3"')]


def test_stored_configs_and_presets_round_trip_through_json():
    from control.presets import PRESETS, preset_config
    from dashboard import forms
    from engine.config import ExperimentConfig, parse_config

    configs = [ExperimentConfig().model_dump(mode="json")]
    configs += [
        preset_config(name, dataset, size, 10) for name in PRESETS for dataset, size in (("digits", 8), ("x", 96))
    ]
    for raw in configs:
        if raw.get("train", {}).get("init_mode") == "continue":  # its notes: set the run it continues
            raw["train"]["init_from_run"] = 1
        stored = json.loads(json.dumps(parse_config(raw).model_dump(mode="json")))  # what the DB keeps
        assert parse_config(stored).model_dump(mode="json") == stored
        built, errors = forms.state_to_config(forms.config_to_state(stored), stored)  # the builder's widgets
        assert errors == [] and parse_config(built).model_dump(mode="json") == stored


# ------------------------------------------------------------------ every YAML entry point is the strict one
DEEP = "[" * 10_000 + "]" * 10_000  # plain YAML recurses once per level: a RecursionError, uncaught


@pytest.mark.parametrize(
    "payload, message",
    [
        ("repeats: 2\nrepeats: 3\n", "the key 'repeats' appears twice in one mapping"),
        (f"notes: {DEEP}\n", "nested too deeply"),
    ],
    ids=["duplicate key", "nested 10000 deep"],
)
@pytest.mark.attack("fuzzed configs")
def test_a_study_file_with_a_duplicate_key_or_deep_nesting_is_one_line_from_the_real_cli(
    db_url, tmp_path, payload, message
):
    import yaml

    from db import queries
    from tests.conftest import tiny_config
    from tests.test_cli import engine_cli

    base = {k: v for k, v in tiny_config().items() if k != "name"}
    study = {"name": "s", "base": base, "factors": {"optim.lr": [0.003, 0.03]}, "strategy": "grid"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study) + payload, encoding="utf-8")  # valid but for the payload
    proc = engine_cli("study", "create", str(path), "--preview", "--db", db_url)
    assert proc.returncode == 2, (proc.stdout[-1000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"study: cannot read {path}: ") and message in lines[0], lines
    assert queries.list_studies(db_url) == [] and queries.list_runs(db_url).empty


@pytest.mark.parametrize(
    "text, message",
    [('{"limit": 10, "limit": 20}', "the key 'limit' appears twice"), (DEEP, "nested too deeply")],
    ids=["duplicate key", "nested 10000 deep"],
)
@pytest.mark.attack("fuzzed configs")
def test_the_dashboards_yaml_boxes_refuse_a_duplicate_key_and_deep_nesting_in_one_line(text, message):
    from dashboard.aug_params import read_value
    from dashboard.augment_preview import parse_augment_yaml
    from dashboard.forms import STEPS_KEY, parse_params, steps_from_state
    from dashboard.study_design import parse_levels
    from engine.config import ConfigError

    with pytest.raises(ValueError, match=message):  # a step's "other params" box
        parse_params(text)
    with pytest.raises(ValueError, match=message):  # a parameter's JSON widget
        read_value({"aug:s1:v:fill": text}, "s1", "fill", "json")
    # the builder's steps: the box's refusal is the step's one error, and the step is not applied
    state = {STEPS_KEY: [{"uid": "s1", "name": "HorizontalFlip", "fields": {}, "keys": []}], "aug:s1:params": text}
    _, errors = steps_from_state(state)
    assert [f for f, _ in errors] == ["augment.train.0"] and message in errors[0][1] and "\n" not in errors[0][1]
    # a study factor's levels (a comma list: depth, not keys) and the Augmentations page's editor
    editor = f"train: {DEEP}\n" if text == DEEP else "train: []\nmixup: {}\nmixup: {}\n"
    if text == DEEP:
        levels, err = parse_levels(text)
        assert levels is None and message in err
    with pytest.raises(ConfigError) as exc:
        parse_augment_yaml(editor)
    assert len(exc.value.errors) == 1 and exc.value.errors[0][0] == "augment"
    assert (message if text == DEEP else "the key 'mixup' appears twice") in exc.value.errors[0][1]
