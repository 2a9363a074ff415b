"""What every scenario needs: a code collector, a server process, generators, clean-up."""

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.accounts import CodeCollector
from bench.backends import Stack, stack
from bench.profile import Profiler
from bench.server import ServerProcess, Snapshot
from bench.workers import Args, HandlerFactory, Pool
from plauder.client.inbox import ACK_INTERVAL

T = TypeVar("T")

# Limits that would throttle a load test are raised; everything else keeps its default
# (notably sqlite_synchronous=full: `sent` is answered after a durable commit).
BENCH_OPTIONS = {
    "sms_sender": "http",
    "codes_per_number_per_hour": "1000",
    "requests_per_second": "1000000",
    "request_burst": "1000000",
}


@dataclass
class Settings:
    """Options shared by all scenarios."""

    server_options: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None  # parent of the server's data folder (default: a temp dir)
    keep: bool = False  # keep the data folder and server log
    profile_dir: Path | None = None  # record the server with py-spy during measured phases
    server_src: Path | None = None  # run the server from another source tree (PYTHONPATH)
    backend: str = "sqlite"  # sqlite | postgres (PostgreSQL + Redis, started by the bench)
    server_workers: int = 1  # `plauder serve --workers` (postgres only)
    ack_interval: float = ACK_INTERVAL  # seconds between one connection's `ack`s


@dataclass
class Env:
    """Running server nodes (one unless a scenario asks for more) with a code collector."""

    servers: list[ServerProcess]
    collector: CodeCollector
    salt: bytes
    tmp: Path
    stack: Stack
    ack_interval: float = ACK_INTERVAL

    @property
    def server(self) -> ServerProcess:
        """The first node: registration and /metrics go there."""
        return self.servers[0]

    def check(self) -> None:
        """Raise ServerError if a node died."""
        for server in self.servers:
            server.check()

    def snapshot(self) -> Snapshot:
        """CPU and memory of all nodes together now."""
        return Snapshot.total([s.snapshot() for s in self.servers])

    def stack_snapshot(self) -> dict[str, Snapshot]:
        """CPU and memory of PostgreSQL and Redis now (nothing for SQLite)."""
        return self.stack.snapshots()

    async def counters(self) -> dict[str, float]:
        """Store counters: SQLite commits from /metrics, PostgreSQL's from the database."""
        if self.stack.backend == "sqlite":
            metrics = await self.server.metrics()
            return {"db_commits": metrics["db_batches"], "db_operations": metrics["db_operations"]}
        counters = self.stack.counters()
        return {"db_commits": counters["write_xacts"], "wal_bytes": counters["wal_bytes"]}

    def profiler(self, path: Path | None) -> Profiler | None:
        """py-spy recording every server process into `path`, started; None without a path."""
        if path is None:
            return None
        profiler = Profiler([pid for server in self.servers for pid in server.pids], path)
        profiler.start()
        return profiler

    def spec(self, indices: Sequence[int], **extra: object) -> Args:
        """The spec of a load generator owning these accounts."""
        base: Args = {
            "collector": self.collector.url,
            "salt": self.salt,
            "indices": list(indices),
            "ack_interval": self.ack_interval,
        }
        return {**base, **extra}


@contextlib.asynccontextmanager
async def environment(settings: Settings, nodes: int = 1) -> AsyncIterator[Env]:
    """Start a code collector, the backend's services and `nodes` servers (each with
    `settings.server_workers` processes); stop everything at the end, also on error."""
    if (nodes > 1 or settings.server_workers > 1) and settings.backend != "postgres":
        raise ValueError("several nodes or server workers need --backend postgres")
    tmp = Path(tempfile.mkdtemp(prefix="plauder-bench-", dir=settings.data_dir))
    collector = CodeCollector()
    servers: list[ServerProcess] = []
    try:
        with stack(settings.backend) as services:
            try:
                sms_url = await collector.start()
                options = {**BENCH_OPTIONS, "sms_http_url": sms_url, **settings.server_options}
                if nodes > 1:  # every node of a cluster hashes codes with the same secret
                    options["secret_file"] = str(tmp / "server.key")
                for n in range(nodes):
                    flags = list(services.flags)
                    if services.backend != "sqlite":
                        flags += ["--node-id", f"node{n}"]
                    data = tmp / ("data" if nodes == 1 else f"data{n}")
                    server = ServerProcess(
                        data, options, settings.server_src, flags, settings.server_workers
                    )
                    servers.append(server)
                    server.start()
                yield Env(
                    servers,
                    collector,
                    secrets.token_bytes(16),
                    tmp,
                    services,
                    settings.ack_interval,
                )
            finally:  # the servers stop before their database does
                for server in servers:
                    server.stop()
    finally:
        await collector.stop()
        if settings.keep:
            print(f"bench: server data and log kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def generators(env: Env, factory: HandlerFactory, specs: list[Args]) -> Iterator[Pool]:
    """Start load-generator processes; stop them at the end, also on error."""
    pool = Pool(factory, specs)
    pool.watch = env.check  # a dead server fails the command at once
    try:
        pool.start()
        yield pool
    finally:
        pool.stop()


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """Split items into `parts` contiguous chunks of nearly equal size."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def span_seconds(results: list[Args], start: str = "start_ns", end: str = "end_ns") -> float:
    """Wall time from the earliest start to the latest end over all generators."""
    return float(max(r[end] for r in results) - min(r[start] for r in results)) / 1e9


def merge_errors(runs: list[Args]) -> dict[str, int]:
    """The generators' error counts (`errors` of each result) added up by code."""
    out: dict[str, int] = {}
    for r in runs:
        for code, n in r["errors"].items():
            out[code] = out.get(code, 0) + n
    return out


def server_usage(before: Snapshot, after: Snapshot) -> Args:
    """CPU seconds, CPU share of one core, and RSS of the server between two snapshots."""
    cpu = after.cpu_since(before)
    wall = after.t - before.t
    main = after.main_cpu - before.main_cpu
    return {
        "server_cpu_s": cpu,
        "server_cpu_cores": cpu / wall if wall > 0 else 0.0,
        "server_main_thread_cores": main / wall if wall > 0 else 0.0,
        "server_other_threads_cores": (cpu - main) / wall if wall > 0 else 0.0,
        "server_kernel_cpu_share": (after.sys_cpu - before.sys_cpu) / cpu if cpu > 0 else 0.0,
        "server_rss_mib": after.rss / 2**20,
        "server_threads": after.threads,
        "server_fds": after.fds,
    }


def stack_usage(before: dict[str, Snapshot], after: dict[str, Snapshot], messages: int) -> Args:
    """CPU of PostgreSQL and Redis between two snapshots, also per 1,000 messages.

    `stack_cpu_per_1000` is their sum (0 for SQLite), to add to the server's own.
    """
    out: Args = {"stack_cpu_per_1000": 0.0}
    for name, end in after.items():
        cpu = end.cpu_since(before[name])
        wall = end.t - before[name].t
        per_1000 = cpu / messages * 1000 if messages else 0.0
        out[f"{name}_cpu_cores"] = cpu / wall if wall > 0 else 0.0
        out[f"{name}_cpu_per_1000_msgs_s"] = per_1000
        out["stack_cpu_per_1000"] += per_1000
    return out


def cpu_count() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0))
