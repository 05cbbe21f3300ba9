"""Atomic writes on a real folder: a reader sees the old file or the new one, never a part of one."""

import numpy as np
import pytest
import torch

from engine.fileio import atomic_write, atomic_write_bytes, atomic_write_text
from engine.training.checkpoint import load, save_atomic


def test_a_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "stats.json"
    atomic_write_text(target, '{"mean": [0.5]}')
    atomic_write_bytes(target, b'{"mean": [0.25]}')
    assert target.read_text() == '{"mean": [0.25]}'
    assert [p.name for p in target.parent.iterdir()] == ["stats.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "digits.npz"
    with atomic_write(target) as f:
        np.savez(f, x=np.arange(3))
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half of a new file")
        raise RuntimeError("disk full")
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["digits.npz"]


def test_checkpoints_are_written_through_it(tmp_path):
    save_atomic({"epoch": 3, "w": torch.ones(2)}, tmp_path / "last.pt")
    state = load(tmp_path / "last.pt")
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
