"""Inputs crafted to hurt: images and image sizes that would need tens of GB, refused or bounded;
validation and registration measured from the child process that does the loading."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def test_one_huge_image_among_small_ones_is_loaded_at_a_bounded_size_in_a_bounded_child(db_url, tmp_path):
    root = _folder_with_one_big_image(tmp_path / "mixed", 3000)  # 11 images: 27 MB decoded, 1 GB+ as float64 today
    m = _measured(REGISTER.format(path=str(root), options={}), db_url)
    assert m["out"]["loaded_as"] == [512, 512] and m["out"]["width"][2] == 3000
    assert 0 < m["child_mb"] < PEAK_RSS_BOUND_MB, m


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_IMAGE_PIXELS", "4000000")
    root = _folder_with_one_big_image(tmp_path / "bomb", 4000)
    m = _measured(REGISTER.format(path=str(root), options={}), db_url)
    assert m["out"].startswith("DatasetError: image ") and "4000x4000 pixels, more than the 4,000,000" in m["out"]
    assert m["child_mb"] < PEAK_RSS_BOUND_MB, m


def test_a_decompression_bomb_is_a_dataset_error_not_a_traceback(tmp_path, monkeypatch):
    from engine.data import DatasetError, DatasetSpec, load_arrays

    monkeypatch.setenv("LAB_MAX_IMAGE_PIXELS", str(10**12))  # leave it to PIL's own bomb check
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    root = _folder_with_one_big_image(tmp_path / "bomb", 100)
    with pytest.raises(DatasetError, match="unreadable image .*big.png.*decompression bomb"):
        load_arrays(DatasetSpec("imagefolder", str(root)))


@pytest.mark.parametrize("size", [-5, 0, 4, 5000, 2.5, True, "64"])
def test_a_negative_huge_or_non_integer_image_size_is_a_field_message(db_url, tmp_path, size):
    from control.dataset_registry import register_dataset
    from engine.data import DatasetError

    root = _folder_with_one_big_image(tmp_path / "f", 40)
    with pytest.raises(DatasetError, match="image_size must be a whole number of pixels from 8 to 1024"):
        register_dataset(db_url, "x", "imagefolder", str(root), {"image_size": size})


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
    assert 0 < m["child_mb"] < PEAK_RSS_BOUND_MB + 800, m  # torch and a model too


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
def test_a_csv_row_without_a_label_or_with_an_unknown_test_label_is_named(tmp_path, lines, message):
    from control.dataset_registry import load_checked
    from engine.data import DatasetError

    with pytest.raises(DatasetError, match=message):
        load_checked("csv", str(_csv_lab(tmp_path / "c", lines)), {})


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
def test_uploaded_yaml_that_would_be_coerced_or_crash_is_one_field_message(text, field, message):
    from engine.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError) as exc:
        ExperimentConfig.from_yaml(text)
    assert [(f, m) for f, m in exc.value.errors if f == field and message in m], exc.value.errors


def test_a_duplicate_key_in_a_json_config_file_is_refused(tmp_path):
    from engine.config import ConfigError, ExperimentConfig

    path = tmp_path / "c.json"
    path.write_text('{"train": {"epochs": 3, "epochs": 4}}')
    with pytest.raises(ConfigError, match="the key 'epochs' appears twice"):
        ExperimentConfig.from_file(path)
    assert ExperimentConfig.from_yaml("optim:\n  weight_decay: 0\ntrain:\n  seed: 3\n").optim.weight_decay == 0.0


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, None], ids=["empty", "garbage", "missing"])
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
