"""Shared fixtures: a real SQLite file per test, the real engine, real (tiny) data."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Small, real and quick: the engine runs on CPU with few threads so parallel work doesn't thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")

from tests import attack_tally  # noqa: E402  (after the path is set)


def pytest_configure(config):
    config.addinivalue_line("markers", "attack(kind): a fault or bad-input case counted in the attack tally")


def pytest_collection_modifyitems(items):
    for item in items:
        attack_tally.kind_of(item)  # an attack mark with an unknown kind fails the collection


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    attack_tally.on_report(item, outcome.get_result())


def pytest_terminal_summary(terminalreporter):
    attack_tally.report(terminalreporter, terminalreporter.config.rootpath / "artifacts")


def wait_for(predicate, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def db_url(tmp_path, monkeypatch) -> str:
    """A fresh, migrated SQLite file with the built-in datasets registered; runs go under tmp_path."""
    return open_lab(tmp_path, monkeypatch)


def open_lab(root: Path, mp: pytest.MonkeyPatch) -> str:
    """Migrate root/lab.db, register the built-in datasets, point LAB_DB_URL and LAB_RUNS_DIR at it (via mp)."""
    from control.launcher import bootstrap

    url = f"sqlite:///{root / 'lab.db'}"
    mp.setenv("LAB_DB_URL", url)
    mp.setenv("LAB_RUNS_DIR", str(root / "runs"))
    bootstrap(url)
    return url


def tiny_config(**overrides) -> dict:
    """A config that trains the digits in a couple of seconds on CPU. Overrides: {"train.epochs": 2, ...}."""
    cfg = {
        "name": "tiny",
        "data": {"dataset": "digits"},
        "model": {"source": "custom", "name": "small_cnn"},
        "optim": {"name": "adamw", "lr": 0.003},
        "schedule": {"name": "cosine"},
        "train": {"epochs": 3, "batch_size": 64, "seed": 0},
        "eval": {"tta": ["none"]},
    }
    return set_dotted(cfg, overrides)


def set_dotted(cfg: dict, overrides: dict) -> dict:
    """Apply {"train.epochs": 2, ...} to a nested config dict, in place; returns it."""
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL cluster on localhost for this test session (skips with the reason if unavailable)."""
    from tests.services import Postgres

    pg = Postgres().start()
    if pg.reason:
        pytest.skip(pg.reason)
    yield pg
    pg.stop()


@pytest.fixture
def pg_url(postgres_server, tmp_path, monkeypatch):
    """A fresh, migrated PostgreSQL database per test."""
    import uuid

    from sqlalchemy import create_engine, text

    from control.launcher import bootstrap

    name = f"lab_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setenv("LAB_DB_URL", url)
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    bootstrap(url)
    return url


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node Slurm (munged + slurmctld + slurmd) on localhost for this session."""
    from tests.services import Slurm

    cluster = Slurm(tmp_path_factory.mktemp("slurm")).start()
    if cluster.reason:
        pytest.skip(cluster.reason)
    yield cluster
    cluster.stop()


# A real run trained on digits with flipped labels, shared by the data-health and explanation tests.
from tests.health_support import noisy_run  # noqa: E402, F401  (a session fixture: one training for both files)
