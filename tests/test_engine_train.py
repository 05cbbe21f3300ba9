"""The real engine trains a real model on the real digits; every epoch lands in the DB."""

import subprocess
import sys
from pathlib import Path

from control.preflight import resolve_dataset
from db import queries, store
from db.models import RunStatus
from db.sink import DBSink
from engine.config import parse_config
from engine.training.loop import train
from tests.conftest import ROOT, tiny_config


def test_small_cnn_reaches_90_percent_on_digits_and_every_epoch_is_stored(db_url, tmp_path):
    cfg = parse_config(tiny_config(**{"train.epochs": 4}))
    run_id = store.create_run(db_url, cfg.model_dump(mode="json"))
    result = train(cfg, resolve_dataset(db_url, "digits"), tmp_path / "run", DBSink(db_url, run_id))

    assert result.status == RunStatus.COMPLETED
    assert result.test_accuracy >= 0.90
    run = queries.get_run(db_url, run_id)
    assert run["status"] == RunStatus.COMPLETED and run["epochs_done"] == 4
    hist = queries.metric_history(db_url, [run_id])
    for split, name in [
        ("train", "loss"),
        ("train", "acc"),
        ("val", "loss"),
        ("val", "acc"),
        ("train", "lr"),
        ("train", "epoch_seconds"),
        ("train", "images_per_sec"),
    ]:
        epochs = hist[(hist.split == split) & (hist.name == name)]["epoch"].tolist()
        assert epochs == [1, 2, 3, 4], (split, name)
    assert sorted(queries.confusion_matrices(db_url, run_id)) == [1, 2, 3, 4]
    cm = queries.confusion_matrices(db_url, run_id)[4]
    assert sum(map(sum, cm)) == 143  # every validation image counted once
    test_eval = [e for e in queries.evaluations(db_url, run_id) if e["split"] == "test"][0]
    assert abs(test_eval["accuracy"] - result.test_accuracy) < 1e-9
    kinds = {c["kind"] for c in queries.checkpoints(db_url, run_id)}
    assert {"last", "best", "epoch"} <= kinds
    assert all(Path(c["path"]).is_file() for c in queries.checkpoints(db_url, run_id))


def test_cli_trains_from_a_yaml_file_without_the_dashboard(db_url, tmp_path):
    cfg = parse_config(tiny_config(**{"train.epochs": 2}))
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "train", str(path), "--db", db_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = int(proc.stdout.split()[1])
    run = queries.get_run(db_url, run_id)
    assert run["status"] == RunStatus.COMPLETED and run["epochs_done"] == 2
    assert run["config"] == cfg.model_dump(mode="json")


def test_cli_refuses_an_invalid_config_with_exit_code_2(db_url, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epochs: 0, batch_size: 64}\noptim: {lr: -3}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "train", str(path), "--db", db_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "train.epochs" in proc.stderr and "optim.lr" in proc.stderr
    assert queries.list_runs(db_url).empty


def test_digits_cache_gives_exactly_the_scikit_learn_images(tmp_path, monkeypatch):
    import numpy as np
    from sklearn.datasets import load_digits

    from engine.data import BUILTIN_SPECS, load_arrays

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    first = load_arrays(BUILTIN_SPECS["digits"])  # builds the cache
    assert (tmp_path / "digits_uint8.npz").is_file()
    second = load_arrays(BUILTIN_SPECS["digits"])  # reads it
    ref = load_digits()
    for data in (first, second):
        assert data.train_x.shape == (1797, 8, 8, 1) and data.train_x.dtype == np.uint8
        assert np.array_equal(data.train_y, ref.target)
        assert np.array_equal(data.train_x[..., 0], np.round(ref.images * 255 / 16).astype(np.uint8))


def test_channel_stats_are_exact_and_cached_per_training_split(tmp_path, monkeypatch):
    import numpy as np

    from engine.data.stats import _stats_cache_path, channel_stats

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    from engine.data import BUILTIN_SPECS, load_arrays

    x = load_arrays(BUILTIN_SPECS["digits"]).train_x  # real images, 1,797 x 8x8x1
    ref = x.astype(np.float64) / 255.0
    mean, std = channel_stats(x)
    assert np.allclose(mean, ref.mean(axis=(0, 1, 2))) and np.allclose(std, ref.std(axis=(0, 1, 2)))
    path = _stats_cache_path(x)
    assert path.is_file()  # measured once ...
    path.write_text('{"mean": [0.25], "std": [0.5]}')
    assert channel_stats(x) == ([0.25], [0.5])  # ... and read back from the cache afterwards
    assert _stats_cache_path(x[:-1]) != path  # another split is another entry
