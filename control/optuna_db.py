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
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True)


def ensure_optuna_tables(url: str) -> None:
    optuna_storage(url)
