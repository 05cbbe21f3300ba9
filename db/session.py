"""Engine and sessions. SQLite (WAL, busy timeout) is the embedded default; any SQLAlchemy URL works.

The URL comes from --db, else LAB_DB_URL, else sqlite:///lab.db in the working directory.
Schema changes go through Alembic (db/migrations); `init_db` upgrades to head.
"""

from __future__ import annotations

import functools
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_URL = "sqlite:///lab.db"
BUSY_TIMEOUT_MS = 30_000


def db_url(url: str | None = None) -> str:
    return url or os.environ.get("LAB_DB_URL") or DEFAULT_URL


@functools.lru_cache(maxsize=16)
def get_engine(url: str | None = None) -> Engine:
    url = db_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a power cut loses at most the last commit
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def sessions(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def _is_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return "locked" in text or "busy" in text


@contextmanager
def session_scope(url: str | None = None):
    with sessions(url)() as s:
        yield s


def write(url: str | None, fn, *, attempts: int = 8):
    """Run fn(session) in a transaction, retrying when SQLite says the database is locked.

    On SQLite the transaction starts with BEGIN IMMEDIATE: it takes the write lock first (waiting up
    to the busy timeout), so whatever fn reads is still true when it writes. Read-then-write logic such
    as "claim a queued run while fewer than N are running" is then atomic across processes, and a
    deferred transaction can never fail half-way when it upgrades from reading to writing."""
    delay = 0.05
    immediate = db_url(url).startswith("sqlite")
    for attempt in range(attempts):
        try:
            with sessions(url)() as s, s.begin():
                if immediate:
                    s.execute(text("BEGIN IMMEDIATE"))  # pysqlite then issues no BEGIN of its own; COMMIT ends it
                return fn(s)
        except OperationalError as exc:
            if not _is_locked(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)


def read(url: str | None, fn):
    with sessions(url)() as s:
        return fn(s)


def init_db(url: str | None = None) -> str:
    """Create or upgrade the schema to the latest migration; returns the URL used."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    url = db_url(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    sqlite = url.startswith("sqlite")
    with get_engine(url).connect() as conn:
        cfg = alembic_config(url, conn)
        current = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
        if current == ScriptDirectory.from_config(cfg).get_current_head():
            return url
        if sqlite:  # a batch migration copies a table and drops the old one: enforced, the drop would cascade
            _set_foreign_keys(conn, False)
        try:
            with conn.begin():
                command.upgrade(cfg, "head")
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("a migration left rows whose foreign keys point nowhere; nothing was changed")
        finally:
            if sqlite:
                _set_foreign_keys(conn, True)
    return url


def alembic_config(url: str, conn):
    """Alembic's settings for our migrations, running on `conn` (a connection inside a transaction)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection_url"] = url
    cfg.attributes["connection"] = conn
    return cfg


def _set_foreign_keys(conn, on: bool) -> None:
    """SQLite ignores this pragma inside a transaction: it is set (and committed) between transactions."""
    conn.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    conn.commit()
