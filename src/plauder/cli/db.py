"""`plauder db upgrade`: bring a database's schema up to date without serving."""

import argparse
from pathlib import Path
from typing import Any

from plauder.cli.output import Printer
from plauder.server.config import load_config


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the `db` subcommand and its actions."""
    p = sub.add_parser("db", parents=[common], help="manage the server's database")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser(
        "upgrade",
        parents=[common],
        help="apply missing schema migrations (SQLite or PostgreSQL) and exit",
        description="Apply missing schema migrations and exit. Safe to run on a live "
        "cluster: nodes take a lock, and `serve` upgrades on start too.",
    )
    up.add_argument("--database", help="postgresql:// URL (default: SQLite in the data folder)")
    up.add_argument("--data", type=Path, help="data folder of the SQLite database")
    up.add_argument("--config", type=Path, help="TOML file with options (env PLAUDER_CONFIG)")
    up.set_defaults(run=upgrade, is_async=True)


async def upgrade(args: argparse.Namespace) -> int:
    """Migrate the configured database to the latest schema."""
    config = load_config({"database": args.database, "data": args.data}, config_file=args.config)
    from plauder.server.storage.factory import open_store  # see serve.run
    from plauder.server.storage.schema import MIGRATIONS

    store = open_store(config)
    await store.start()
    version = store.version
    await store.close()
    where = "PostgreSQL" if config.uses_postgres else f"SQLite ({config.database_path})"
    Printer(args.json).emit(
        "schema",
        f"{where}: schema at version {version} of {len(MIGRATIONS)}",
        database=where,
        version=version,
        latest=len(MIGRATIONS),
    )
    return 0
