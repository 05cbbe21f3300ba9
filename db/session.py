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
from sqlalchemy.exc import DBAPIError, OperationalError
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


class DatabaseCorrupt(RuntimeError):
    """The SQLite file is not a (sound) database: one line that says what to do."""


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///")).expanduser()
    return None


def check_integrity(url: str) -> None:
    """SQLite's `PRAGMA integrity_check` on an existing file; DatabaseCorrupt if it is garbage, truncated
    or damaged. (It cannot see commits in a damaged WAL: SQLite drops those frames silently, so keep
    backups: `python -m engine backup`.)"""
    import sqlite3

    path = sqlite_path(url)
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    broken = DatabaseCorrupt(f"{path.name} is not a valid SQLite database: restore a backup or move it away ({path})")
    # Only through sqlite3, never open()/close() on the file: closing any descriptor of a database file
    # drops every POSIX lock this process holds on it, and another process's writes then corrupt what
    # our open connections see ("database disk image is malformed"). SQLite itself refuses a file that
    # is not a database ("file is not a database"), which lands in the except below.
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        raise broken from None
    if verdict != ["ok"]:
        raise broken


def backup(url: str | None = None, dest: str | Path | None = None) -> Path:
    """A consistent copy of a SQLite lab while engines keep writing (SQLite's online backup API);
    default: <name>-backup-<UTC time>.db beside it. Returns the copy's path."""
    import sqlite3
    from datetime import UTC, datetime

    url = db_url(url)
    path = sqlite_path(url)
    if path is None:
        raise ValueError("backup copies SQLite files; back up a server database with its own tools (pg_dump)")
    check_integrity(url)
    if not path.is_file():
        raise FileNotFoundError(f"no database at {path}")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = Path(dest) if dest else path.with_name(f"{path.stem}-backup-{stamp}{path.suffix or '.db'}")
    src, dst = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return target


# The newest migration's revision (db/migrations/versions). A database already at it is recognised with one
# SELECT, without importing Alembic (a third of a second of every engine process's start);
# tests/test_db.py checks that this is Alembic's own head.
HEAD_REVISION = "0005"


def _at_head(url: str) -> bool:
    with get_engine(url).connect() as conn:
        try:
            versions = [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
        except DBAPIError:  # no table yet: a new database
            return False
        finally:
            conn.rollback()
    return versions == [HEAD_REVISION]


def _create_new(url: str) -> bool:
    """A new SQLite database (no table yet): the models' schema and Alembic's version row at head in one
    transaction (Alembic's "create_all, then stamp"), without importing Alembic or replaying every
    migration (a third of a second of a first start). False, and nothing done, when the database already
    has tables: Alembic then upgrades it. tests/test_db.py checks this schema equals the migrations'."""
    from db.models import Base

    with get_engine(url).connect() as conn, conn.begin():
        # of two processes creating one file, the second waits here, then sees the first one's tables
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        if conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'table'").scalar():
            return False
        Base.metadata.create_all(conn)
        conn.exec_driver_sql(  # what Alembic itself creates
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD_REVISION,))
    return True


def init_db(url: str | None = None, check: bool = True) -> str:
    """Check an existing SQLite file, then create or upgrade the schema to the latest migration;
    returns the URL used. check=False skips `PRAGMA integrity_check` (it reads the whole file): an
    engine started by the launcher runs on a database that `init` or the dashboard already checked."""
    url = db_url(url)
    if sqlite_path(url) is not None:
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
        if check:
            check_integrity(url)
    if _at_head(url) or (sqlite_path(url) is not None and _create_new(url)):
        return url
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

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
