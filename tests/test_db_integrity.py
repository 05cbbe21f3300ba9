"""A garbage, truncated or damaged SQLite file: one line from `engine init` and the dashboard instead
of a traceback; `python -m engine backup` makes a sound copy while the lab is in use."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db import store
from tests.lifecycle_support import ROOT

MESSAGE = "lab.db is not a valid SQLite database: restore a backup or move it away"


def _engine(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "LAB_DB_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 500)


def _checkpointed(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
    conn.close()


def _truncated(path: Path) -> None:
    _checkpointed(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _damaged_page(path: Path) -> None:
    _checkpointed(path)
    conn = sqlite3.connect(path)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page + 8  # inside the runs table's b-tree root page, past its header
    data[start : start + 592] = b"\xff" * 592
    path.write_bytes(bytes(data))


@pytest.fixture
def lab_with_rows(db_url) -> tuple[str, Path]:
    for i in range(50):
        store.create_run(db_url, {"name": f"r{i}", "train": {"epochs": 1}}, notes="x" * 500)
    return db_url, Path(db_url.removeprefix("sqlite:///"))


@pytest.mark.parametrize("damage", [_garbage, _truncated, _damaged_page])
@pytest.mark.attack("corrupt database")
def test_a_broken_lab_db_is_one_line_from_init_and_from_the_dashboard(lab_with_rows, damage):
    url, path = lab_with_rows
    from db.session import get_engine

    get_engine(url).dispose()
    gc.collect()  # no pooled connection left to checkpoint the WAL over the damage later
    _checkpointed(path)
    damage(path)
    res = _engine("init", url=url)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(MESSAGE), res.stderr

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert [e.value.split(" (")[0] for e in at.error] == [MESSAGE]


@pytest.mark.attack("corrupt database")
def test_backup_copies_a_lab_in_use_and_the_copy_is_sound(lab_with_rows, tmp_path):
    url, path = lab_with_rows
    res = _engine("backup", str(tmp_path / "copy.db"), url=url)
    assert res.returncode == 0, res.stderr
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert copy.execute("SELECT count(*) FROM runs").fetchone() == (50,)
    copy.close()
    res = _engine("backup", url=url)  # default: beside the original
    assert res.returncode == 0 and list(path.parent.glob("lab-backup-*.db")), res.stderr
