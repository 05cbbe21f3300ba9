"""Optuna's RDB storage on the lab's own database (SQLite or PostgreSQL), created by `init`.

Optuna keeps its own tables there (studies, trials, ...). Its schema version check is skipped:
alembic_version on this DB belongs to the lab's migrations, and Optuna's tables are created by
the pinned Optuna version itself."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=8)
def optuna_storage(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True)
    if url.startswith("sqlite"):
        _like_the_lab(storage.engine)
    return storage


def _like_the_lab(engine) -> None:
    """Optuna's SQLite connections with the lab's own settings (db.session): WAL's synchronous=NORMAL
    instead of SQLite's FULL, so its several commits per trial (create, tell) do not each wait for an
    fsync (a power cut may lose the last commit, as with every other lab write), and the same busy wait."""
    from sqlalchemy import event

    from db.session import BUSY_TIMEOUT_MS

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    engine.dispose()  # the connections opened while creating the tables: the next ones get the pragmas


def ensure_optuna_tables(url: str) -> None:
    optuna_storage(url)
