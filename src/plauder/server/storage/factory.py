"""Choosing the store a configuration asks for."""

from plauder.server.config import Config
from plauder.server.storage.base import Store


def open_store(config: Config) -> Store:
    """PostgreSQL when a database URL is configured, else SQLite in the data folder."""
    if config.uses_postgres:
        from plauder.server.storage.postgres import PostgresStore

        return PostgresStore(config.database, config.db_pool_size, config.commit_gather_ms)
    from plauder.server.storage.sqlite import SqliteStore

    return SqliteStore(config.database_path, config.sqlite_synchronous, config.commit_gather_ms)
