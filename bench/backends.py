"""What the server under test stores in: the embedded SQLite, or PostgreSQL + Redis.

For `postgres` the bench starts a throwaway PostgreSQL and Redis on 127.0.0.1
(tests/services.py), measures their CPU beside the server's, and removes them at the end.
"""

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped]

from bench.server import Snapshot
from tests.services import Postgres, Redis

BACKENDS = ("sqlite", "postgres")

# What an operator of a database host would tune. Durability stays on: fsync,
# synchronous_commit and full_page_writes keep their defaults, so `sent` still means
# the envelope is on disk. Fewer checkpoints (max_wal_size) only means fewer full-page
# images in the WAL; random_page_cost is the usual value for SSDs (it makes the planner
# use the indexes even on the bench's small tables); max_connections (300) comes from
# tests/services.py.
POSTGRES_SETTINGS = {
    "shared_buffers": "512MB",
    "wal_buffers": "16MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "random_page_cost": "1.1",
}

_COUNTERS = (
    "SELECT pg_current_wal_lsn() - '0/0', txid_snapshot_xmax(txid_current_snapshot()), "
    "(SELECT setting FROM pg_settings WHERE name = 'fsync'), "
    "(SELECT setting FROM pg_settings WHERE name = 'synchronous_commit')"
)


@dataclass
class Stack:
    """The processes behind the server: none for SQLite, PostgreSQL and Redis otherwise."""

    backend: str = "sqlite"
    flags: list[str] = field(default_factory=list)  # for `plauder serve`
    postgres: Postgres | None = None
    redis: Redis | None = None
    database: str = ""

    def snapshots(self) -> dict[str, Snapshot]:
        """CPU and memory of PostgreSQL (postmaster and backends) and of Redis now."""
        out = {}
        if self.postgres is not None:
            pid = int((self.postgres.data / "postmaster.pid").read_text().split()[0])
            out["postgres"] = Snapshot.of_tree(psutil.Process(pid))
        if self.redis is not None and self.redis.proc is not None:
            out["redis"] = Snapshot.of_tree(psutil.Process(self.redis.proc.pid))
        return out

    def counters(self) -> dict[str, float]:
        """PostgreSQL's WAL position (bytes) and next transaction id (write commits)."""
        if self.postgres is None:
            return {}
        row = self.postgres.psql(_COUNTERS, self.database.rsplit("/", 1)[-1]).strip()
        wal, xid, fsync, sync = row.split("|")
        if fsync != "on" or sync != "on":
            raise RuntimeError(f"PostgreSQL is not durable: fsync={fsync} sync={sync}")
        return {"wal_bytes": float(wal), "write_xacts": float(xid)}


@contextlib.contextmanager
def stack(backend: str) -> Iterator[Stack]:
    """Start what the backend needs; stop and delete it at the end, also on error."""
    if backend == "sqlite":
        yield Stack()
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    postgres = Postgres()
    redis = Redis()
    try:
        with open(postgres.data / "postgresql.conf", "a") as conf:
            conf.write("\n# plauder bench\n")
            conf.writelines(f"{name} = '{value}'\n" for name, value in POSTGRES_SETTINGS.items())
        postgres.start()
        redis.start()
        database = postgres.create_database()
        yield Stack(
            "postgres", ["--database", database, "--redis", redis.url], postgres, redis, database
        )
    finally:
        redis.stop()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            postgres.destroy()
