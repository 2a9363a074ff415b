"""Scenario `idle`: hold many authenticated connections; connect rate, memory, CPU."""

import asyncio
import time
from dataclasses import dataclass

from bench.harness import Settings, environment, generators, server_usage, span_seconds, split
from bench.loadgen import LoadWorker
from bench.profile import Profiler
from bench.stats import summarize
from bench.workers import Args
from plauder.protocol.frames import Ping, Pong


@dataclass
class IdleParams:
    """Sizes of the idle scenario."""

    connections: int = 19_000
    workers: int = 4  # generator processes (a process may open at most 20,000 files)
    concurrency: int = 256  # connection attempts in flight, over all generators
    hold: float = 10.0  # seconds to hold the connections while measuring idle CPU
    pings: int = 200  # round trips measured while all connections are open


class IdleWorker(LoadWorker):
    """Holds connections and measures ping round trips on some of them."""

    async def cmd_ping(self, count: int, timeout: float) -> Args:
        """Ping up to `count` connections one after the other; round trips in ms."""
        rtts: list[float] = []
        for wire in list(self.wires.values())[:count]:
            t0 = time.monotonic_ns()
            answer = await wire.request(Ping(id=wire.next_id()), timeout)
            if isinstance(answer, Pong):
                rtts.append((time.monotonic_ns() - t0) / 1e6)
        return {"rtt_ms": rtts}


async def run_idle(p: IdleParams, settings: Settings) -> Args:
    """Register C accounts, restart the server, connect them all, hold, measure."""
    per_worker = max(1, p.concurrency // p.workers)
    async with environment(settings) as env:
        chunks = split(range(p.connections), p.workers)
        with generators(env, IdleWorker, [env.spec(c) for c in chunks]) as pool:
            ws_url = env.server.ws_url
            reg = await pool.call(
                "register", {"ws_url": ws_url, "concurrency": 32, "timeout": 900}, 960
            )
            registered = sum(r["done"] for r in reg)
            # A fresh process with the accounts in its database: RSS "before" holds no
            # leftovers of registration.
            env.server.stop()
            env.server.start()
            await asyncio.sleep(2.0)
            profiler = None
            if settings.profile_dir is not None:
                profile = settings.profile_dir / f"idle-{p.connections}.txt"
                profiler = Profiler(env.server.pids, profile)
                profiler.start()
            before = env.server.snapshot()
            args = {"ws_url": env.server.ws_url, "concurrency": per_worker, "timeout": 600}
            conn = await pool.call("connect", args, 660)
            connected = env.server.snapshot()
            hot = profiler.stop() if profiler is not None else None
            await asyncio.sleep(p.hold)
            held = env.server.snapshot()
            metrics = await env.server.metrics()
            pings = await pool.call("ping", {"count": p.pings // len(pool), "timeout": 30}, 120)
            established = sum(r["done"] for r in conn)
            seconds = span_seconds(conn)
            per_conn = (held.rss - before.rss) / established if established else float("nan")
            await pool.call("disconnect", {"timeout": 120}, 180)
    return {
        "connections": p.connections,
        "generators": p.workers,
        "registered": registered,
        "register_per_s": registered / span_seconds(reg),
        "established": established,
        "failed": sum(r["failed"] for r in conn),
        "errors": [e for r in conn for e in r["errors"]][:5],
        "server_authenticated": metrics.get("authenticated", 0.0),
        "connect_seconds": seconds,
        "connect_per_s": established / seconds if seconds > 0 else 0.0,
        "connect_latency_ms": summarize(x for r in conn for x in r["latency_ms"]),
        "server_cpu_connect_s": connected.cpu_since(before),
        "server_cpu_per_1000_connects_s": connected.cpu_since(before) / established * 1000,
        "idle_server_cpu_pct": 100 * held.cpu_since(connected) / (held.t - connected.t),
        "rss_before_mib": before.rss / 2**20,
        "rss_after_mib": held.rss / 2**20,
        "rss_per_connection_kib": per_conn / 1024,
        "ping_rtt_ms": summarize(x for r in pings for x in r["rtt_ms"]),
        "loadgen_cpu_connect_s": sum(r["cpu"] for r in conn),
        **server_usage(before, held),
        "profile": hot,
    }
