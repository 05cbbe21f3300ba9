"""A real run trained on digits with deliberately flipped labels, shared by the data-health and the
explanation tests: the sklearn digits written as an .npz with a seeded 8 % of labels changed to another
class, trained for 3 epochs by a real `python -m engine train` process (with TTA variants)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FLIP_SHARE = 0.08
TTA = ["none", "hflip", "dihedral8"]


def noisy_digits(path: Path) -> dict[bytes, set[int]]:
    """Write digits with flipped labels to `path` (.npz); returns image bytes -> the true label(s)."""
    from engine.data import BUILTIN_SPECS, load_arrays

    d = load_arrays(BUILTIN_SPECS["digits"])
    rng = np.random.default_rng(1)
    y = d.train_y.copy()
    flip = rng.choice(len(y), int(FLIP_SHARE * len(y)), replace=False)
    y[flip] = (y[flip] + rng.integers(1, 10, len(flip))) % 10  # always another class
    np.savez(path, images=d.train_x, labels=y)
    clean: dict[bytes, set[int]] = {}
    for im, label in zip(d.train_x, d.train_y):
        clean.setdefault(im.tobytes(), set()).add(int(label))
    return clean


def flipped_mask(x: np.ndarray, y: np.ndarray, clean: dict[bytes, set[int]]) -> np.ndarray:
    """Which images of a split carry a label that is not their true one."""
    return np.array([int(label) not in clean[im.tobytes()] for im, label in zip(x, y)])


@pytest.fixture(scope="session")
def noisy_run(tmp_path_factory):
    """{"url", "run_id", "root", "clean", "config"}: the trained run in its own migrated SQLite lab
    (the environment is left as it was: tests that open pages call use_lab)."""
    from engine.config import parse_config
    from tests.conftest import open_lab

    root = tmp_path_factory.mktemp("noisy")
    clean = noisy_digits(root / "noisy.npz")
    raw = {
        "name": "noisy",
        "data": {"dataset": f"npz:{root / 'noisy.npz'}"},
        "model": {"source": "custom", "name": "small_cnn"},
        "optim": {"name": "adamw", "lr": 0.003},
        "schedule": {"name": "cosine"},
        "train": {"epochs": 3, "batch_size": 64, "seed": 0},
        "eval": {"tta": TTA},
    }
    cfg = parse_config(raw)
    (root / "run.yaml").write_text(cfg.to_yaml())
    with pytest.MonkeyPatch.context() as mp:
        url = open_lab(root, mp)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, "-m", "engine", "train", str(root / "run.yaml"), "--db", url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        run_id = int(proc.stdout.split("run ", 1)[1].split()[0])
    return {"url": url, "run_id": run_id, "root": root, "clean": clean, "config": cfg}


def run_splits(lab: dict):
    """The shared lab run's splits, as the engine made them from its config."""
    from control.preflight import resolve_dataset
    from engine.data import load_arrays, make_splits

    return make_splits(load_arrays(resolve_dataset(lab["url"], lab["config"].data.dataset)), lab["config"].data)


def use_lab(lab: dict, monkeypatch) -> None:
    """Point this test's environment (the dashboard's database and runs folder) at the shared lab."""
    monkeypatch.setenv("LAB_DB_URL", lab["url"])
    monkeypatch.setenv("LAB_RUNS_DIR", str(lab["root"] / "runs"))


def await_explain(at, url: str, run_id: int, timeout: float = 300) -> None:
    """Rerun the page until the run's background explain job has ended and the page collected it (each run
    polls the job, as the page's fragment does), then once more."""
    import time

    from control import explain_jobs

    deadline = time.monotonic() + timeout
    while explain_jobs.job(url, run_id) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert explain_jobs.job(url, run_id) is None, "the explain job did not end"
    at.run()
    assert not at.exception, [e.message for e in at.exception]


def image_captions(at, prefix: str) -> list[str]:
    """Captions of every image tile on the page that start with `prefix`."""
    return [img.caption for el in at.image for img in el.proto.imgs if img.caption.startswith(prefix)]


def tile_index(caption: str) -> int:
    """The split index a tile's caption names ("test #17 predicted ...": 17)."""
    return int(caption.split("#", 1)[1].split()[0])
