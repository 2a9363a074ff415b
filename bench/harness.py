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
from bench.server import ServerProcess, Snapshot
from bench.workers import Args, HandlerFactory, Pool

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


@dataclass
class Env:
    """A running server with its code collector."""

    server: ServerProcess
    collector: CodeCollector
    salt: bytes
    tmp: Path

    def spec(self, indices: Sequence[int], **extra: object) -> Args:
        """The spec of a load generator owning these accounts."""
        base: Args = {"collector": self.collector.url, "salt": self.salt, "indices": list(indices)}
        return {**base, **extra}


@contextlib.asynccontextmanager
async def environment(settings: Settings) -> AsyncIterator[Env]:
    """Start a code collector and a server; stop both (SIGTERM) at the end, also on error."""
    tmp = Path(tempfile.mkdtemp(prefix="plauder-bench-", dir=settings.data_dir))
    collector = CodeCollector()
    server: ServerProcess | None = None
    try:
        sms_url = await collector.start()
        options = {**BENCH_OPTIONS, "sms_http_url": sms_url, **settings.server_options}
        server = ServerProcess(tmp / "data", options, settings.server_src)
        server.start()
        yield Env(server, collector, secrets.token_bytes(16), tmp)
    finally:
        if server is not None:
            server.stop()
        await collector.stop()
        if settings.keep:
            print(f"bench: server data and log kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def generators(env: Env, factory: HandlerFactory, specs: list[Args]) -> Iterator[Pool]:
    """Start load-generator processes; stop them at the end, also on error."""
    pool = Pool(factory, specs)
    pool.watch = env.server.check  # a dead server fails the command at once
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


def cpu_count() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0))
