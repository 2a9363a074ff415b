"""What the server's database holds, per table and index, read from outside the server.

SQLite: the `dbstat` table of a read-only connection to the server's file (it sees the
WAL too, so no checkpoint is needed): bytes of the pages each table and index uses (the
freelist left out) and the bytes of their records. PostgreSQL: `pg_total_relation_size`
of every table (with its indexes and TOAST) in the server's database.
"""

import contextlib
import sqlite3
from pathlib import Path

from bench.backends import Stack

Usage = dict[str, dict[str, float]]  # name -> {"bytes": pages, "payload": records}

_SQLITE = "SELECT name, SUM(pgsize), SUM(payload) FROM dbstat GROUP BY name"
_POSTGRES = (
    "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
    "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
)


def sqlite_usage(path: Path) -> Usage:
    """Bytes in pages and in records of every table and index of an SQLite file."""
    uri = f"file:{path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        rows = db.execute(_SQLITE).fetchall()
    return {
        name: {"bytes": float(pages), "payload": float(payload)} for name, pages, payload in rows
    }


def postgres_usage(stack: Stack) -> Usage:
    """Bytes of every table of the server's PostgreSQL database, indexes and TOAST included."""
    assert stack.postgres is not None
    text = stack.postgres.psql(_POSTGRES, stack.database.rsplit("/", 1)[-1])
    out: Usage = {}
    for line in text.strip().splitlines():
        name, _, size = line.partition("|")
        out[name] = {"bytes": float(size)}
    return out


def usage(stack: Stack, sqlite_path: Path) -> Usage:
    """The database's usage for the backend in use."""
    return postgres_usage(stack) if stack.backend == "postgres" else sqlite_usage(sqlite_path)


def growth(before: Usage, after: Usage, per: int) -> Usage:
    """What each table grew by between two readings, divided by `per`; unchanged ones left out."""
    out: Usage = {}
    for name, end in after.items():
        start = before.get(name, {})
        grown = {k: (v - start.get(k, 0.0)) / per for k, v in end.items()}
        if any(grown.values()):
            out[name] = grown
    return out


def total(usage: Usage, key: str = "bytes") -> float:
    """The sum of one figure over all tables and indexes."""
    return sum(u.get(key, 0.0) for u in usage.values())
