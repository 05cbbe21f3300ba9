"""Export (ONNX, TorchScript) and predict on a real run trained on the real digits: the exported models and the
CSV of `predict` give the engine's own probabilities."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from db import queries, store
from db.sink import DBSink
from engine.config import parse_config
from engine.data import BUILTIN_SPECS, load_arrays, make_splits
from engine.export import (
    export_onnx,
    export_torchscript,
    load_checkpoint,
    onnx_probabilities,
    run_image_size,
    torchscript_probabilities,
)
from engine.training.evaluate import predict_probs, tta_probabilities
from engine.training.loop import train
from tests.conftest import ROOT, open_lab, tiny_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A DB with one completed run (2 epochs of small_cnn on the digits) and its checkpoints."""
    root = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as mp:
        url = open_lab(root, mp)
        cfg = parse_config(tiny_config(**{"train.epochs": 2}))
        run_id = store.create_run(url, cfg.model_dump(mode="json"))
        result = train(cfg, BUILTIN_SPECS["digits"], root / "run", DBSink(url, run_id))
        assert result.status == "completed"
        yield {"url": url, "run_id": run_id, "best": queries.checkpoint_path(url, run_id, "best"), "cfg": cfg}


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def named_lab(tmp_path_factory):
    """A run on the digits written as an .npz with named classes ("zero" ... "nine"): a CSV that wrote
    class indices instead of names is told apart. {"url", "run_id", "best", "test_x"}."""
    from control.preflight import resolve_dataset

    root = tmp_path_factory.mktemp("named")
    d = load_arrays(BUILTIN_SPECS["digits"])
    np.savez(root / "named.npz", images=d.train_x, labels=d.train_y, class_names=np.array(NAMES))
    with pytest.MonkeyPatch.context() as mp:
        url = open_lab(root, mp)
        cfg = parse_config(tiny_config(**{"train.epochs": 1, "data.dataset": f"npz:{root / 'named.npz'}"}))
        run_id = store.create_run(url, cfg.model_dump(mode="json"))
        spec = resolve_dataset(url, cfg.data.dataset)
        assert train(cfg, spec, root / "run", DBSink(url, run_id)).status == "completed"
        best = queries.checkpoint_path(url, run_id, "best")
        yield {"url": url, "run_id": run_id, "best": best, "test_x": make_splits(load_arrays(spec), cfg.data).test_x}


@pytest.fixture(scope="module")
def test_split(lab):
    splits = make_splits(load_arrays(BUILTIN_SPECS["digits"]), lab["cfg"].data)
    return splits.test_x, splits.test_y


def _engine_probs(lab, x):
    loaded = load_checkpoint(lab["best"])
    return predict_probs(loaded.model, x, loaded.mean, loaded.std, CPU).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_gives_torchs_top1_and_probabilities_on_the_whole_test_split(lab, test_split, tmp_path, fmt):
    loaded = load_checkpoint(lab["best"])
    size = run_image_size(loaded.cfg, BUILTIN_SPECS["digits"])
    assert size == 8
    x, y = test_split
    if fmt == "onnx":
        got = onnx_probabilities(export_onnx(loaded, size, tmp_path / "m.onnx"), x)
    else:
        got = torchscript_probabilities(export_torchscript(loaded, size, tmp_path / "m.pt"), x)
    want = _engine_probs(lab, x)
    assert got.shape == (len(y), 10)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert np.abs(got - want).max() < 1e-4
    assert (want.argmax(1) == y).mean() > 0.8  # a trained model: the comparison is over meaningful predictions


def test_onnx_file_carries_the_normalisation_and_class_names(lab, tmp_path):
    import onnx

    loaded = load_checkpoint(lab["best"])
    meta = {p.key: p.value for p in onnx.load(str(export_onnx(loaded, 8, tmp_path / "m.onnx"))).metadata_props}
    assert meta["image_size"] == "8" and meta["channels"] == "1"
    assert np.allclose(json.loads(meta["mean"]), loaded.mean) and np.allclose(json.loads(meta["std"]), loaded.std)
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]


def _engine(*args, db):
    return subprocess.run(
        [sys.executable, "-m", "engine", *args, "--db", db], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_cli_export_writes_a_model_that_onnxruntime_runs(lab, test_split, tmp_path):
    out = tmp_path / "cli.onnx"
    proc = _engine("export", "--run-id", str(lab["run_id"]), "--format", "onnx", "--out", str(out), db=lab["url"])
    assert proc.returncode == 0, proc.stderr
    x, _ = test_split
    assert np.abs(onnx_probabilities(out, x[:50]) - _engine_probs(lab, x[:50])).max() < 1e-4


def test_cli_refuses_an_unknown_checkpoint_and_run_with_exit_code_2(lab, tmp_path):
    proc = _engine("export", "--run-id", str(lab["run_id"]), "--format", "onnx", "--out", str(tmp_path / "m"),
                   "--checkpoint", "epoch_0099", db=lab["url"])  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("--checkpoint:") and "best" in proc.stderr
    proc = _engine("predict", str(tmp_path), "--run-id", str(lab["run_id"]), "--csv", "p.csv", db=lab["url"])
    assert proc.returncode == 2 and proc.stderr == "paths: no image files found\n"  # an empty folder
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(tmp_path / "a.png")
    proc = _engine("predict", str(tmp_path), "--run-id", "999", "--csv", str(tmp_path / "p.csv"), db=lab["url"])
    assert proc.returncode == 2 and proc.stderr.startswith("--run-id:")
    (tmp_path / "notes.png").write_text("not an image")
    proc = _engine(
        "predict", str(tmp_path / "notes.png"), "--run-id", str(lab["run_id"]), "--csv", "p.csv", db=lab["url"]
    )
    assert proc.returncode == 2 and proc.stderr.startswith("paths: unreadable image")


@pytest.mark.parametrize("tta", ["none", "hflip"])
def test_predict_on_a_folder_of_pngs_gives_one_row_per_image_with_the_engines_predictions(named_lab, tmp_path, tta):
    lab, x = named_lab, named_lab["test_x"]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(30):
        Image.fromarray(x[i, :, :, 0], mode="L").save(folder / f"img_{i:02d}.png")
    out = tmp_path / "pred.csv"
    proc = _engine(
        "predict", str(folder), "--run-id", str(lab["run_id"]), "--csv", str(out), "--tta", tta, db=lab["url"]
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [str(folder / f"img_{i:02d}.png") for i in range(30)]
    loaded = load_checkpoint(lab["best"])
    assert loaded.class_names == NAMES
    assert list(rows[0]) == ["path", "predicted", "confidence"] + [f"p_{name}" for name in NAMES]
    want = tta_probabilities(loaded.model, x[:30], tta, 10, loaded.mean, loaded.std, CPU).numpy()
    got = np.array([[float(r[f"p_{name}"]) for name in NAMES] for r in rows])
    assert np.abs(got - want).max() < 1e-5
    assert [r["predicted"] for r in rows] == [NAMES[k] for k in want.argmax(1)]  # the class's name, not its index
    assert np.allclose([float(r["confidence"]) for r in rows], want.max(1), atol=1e-5)
