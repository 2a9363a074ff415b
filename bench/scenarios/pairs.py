"""Scenario `pairs`: N/2 senders each send M messages to their own receiver."""

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Env, Settings, environment, generators, server_usage, split
from bench.loadgen import LoadWorker
from bench.profile import Profiler
from bench.stats import summarize
from bench.traffic import Traffic
from bench.workers import Args, Pool

MAX = 0.0  # rate meaning "as fast as the window allows" (closed loop)


@dataclass
class PairsParams:
    """Sizes of the pairs scenario."""

    clients: int = 1000  # half send, half receive
    messages: int = 200  # per sender, closed loop
    in_flight: int = 10  # per sender, closed loop
    rates: list[float] = field(default_factory=lambda: [MAX])  # MAX or messages/s in total
    duration: float = 20.0  # seconds of each paced phase
    warmup: int = 10  # closed-loop messages per sender before measuring
    workers: int = 2  # generator processes
    concurrency: int = 128  # registrations/connections in flight, over all generators
    timeout: float = 300.0  # of each phase


class PairsWorker(LoadWorker):
    """Owns some pairs (both ends) and runs traffic between them."""

    async def cmd_run(
        self, messages: int, in_flight: int, rate: float, duration: float, timeout: float
    ) -> Args:
        """One phase: closed loop (rate 0) or paced at `rate` messages/s from this worker."""
        pairs = [(self.wires[a], self.idents[b].number, self.wires[b]) for a, b in self.pairs]
        traffic = Traffic(pairs, in_flight)
        if rate > 0:
            await traffic.paced(rate, duration, timeout)
        else:
            await traffic.closed_loop(messages, timeout)
        return {
            "sent": traffic.sent,
            "answered": traffic.answered,
            "received": traffic.received,
            "skipped": traffic.skipped,
            "errors": dict(traffic.errors),
            "first_ns": traffic.first_ns,
            "last_ns": traffic.last_ns or time.monotonic_ns(),
            "deliver_ms": traffic.deliver_ms.tolist(),
            "commit_ms": traffic.commit_ms.tolist(),
            "lag_ms": traffic.lag_ms.tolist(),
        }

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(sender, receiver) account indices of this worker."""
        return [(int(a), int(b)) for a, b in self.spec["pairs"]]


async def run_pairs(p: PairsParams, settings: Settings) -> list[Args]:
    """Register and connect the clients once, then run each phase; one result per phase."""
    clients = p.clients - p.clients % 2
    pairs = [(i, i + 1) for i in range(0, clients, 2)]
    per_worker = max(1, p.concurrency // p.workers)
    async with environment(settings) as env:
        specs = []
        for chunk in split(pairs, p.workers):
            specs.append(env.spec([i for pair in chunk for i in pair], pairs=chunk))
        with generators(env, PairsWorker, specs) as pool:
            setup = {"ws_url": env.server.ws_url, "concurrency": per_worker, "timeout": 600}
            await pool.call("register", setup, 660)
            conn = await pool.call("connect", setup, 660)
            if sum(r["done"] for r in conn) != clients:
                raise RuntimeError(f"not all clients connected: {[r['errors'] for r in conn]}")
            if p.warmup:
                await _phase(env, pool, p, MAX, p.warmup)
            results = []
            for rate in p.rates:
                profile = None
                if settings.profile_dir is not None:
                    profile = settings.profile_dir / f"pairs-{clients}-{rate or 'max'}.txt"
                result = await _phase(env, pool, p, rate, p.messages, profile)
                result.update(clients=clients, generators=len(pool), in_flight=p.in_flight)
                results.append(result)
    return results


async def _phase(
    env: Env, pool: Pool, p: PairsParams, rate: float, messages: int, profile: Path | None = None
) -> Args:
    await asyncio.sleep(1.0)  # let the server settle (acks, WAL checkpoints)
    profiler = Profiler(env.server.pid, profile) if profile else None
    if profiler is not None:
        profiler.start()
    metrics_before = await env.server.metrics()
    before = env.server.snapshot()
    args = {
        "messages": messages,
        "in_flight": p.in_flight,
        "rate": rate / len(pool),
        "duration": p.duration,
        "timeout": p.timeout,
    }
    runs = await pool.call("run", args, p.timeout + 60)
    after = env.server.snapshot()
    metrics_after = await env.server.metrics()
    hot = profiler.stop() if profiler is not None else None
    seconds = (max(r["last_ns"] for r in runs) - min(r["first_ns"] for r in runs)) / 1e9
    received = sum(r["received"] for r in runs)
    errors: dict[str, int] = {}
    for r in runs:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    batches = metrics_after["db_batches"] - metrics_before["db_batches"]
    operations = metrics_after["db_operations"] - metrics_before["db_operations"]
    sent = sum(r["sent"] for r in runs)
    if errors or received < sent:
        print(f"bench: WARNING: {received} of {sent} delivered; errors {errors}", flush=True)
    loadgen_cpu = sum(r["cpu"] for r in runs)
    usage = server_usage(before, after)
    return {
        "mode": "paced" if rate > 0 else "closed-loop",
        "offered_per_s": rate if rate > 0 else None,
        "messages_per_sender": messages if rate <= 0 else None,
        "sent": sent,
        "stored": sum(r["answered"] for r in runs),
        "delivered": received,
        "skipped": sum(r["skipped"] for r in runs),
        "errors": errors,
        "seconds": seconds,
        "delivered_per_s": received / seconds if seconds > 0 else 0.0,
        "latency_ms": summarize(x for r in runs for x in r["deliver_ms"]),
        "commit_latency_ms": summarize(x for r in runs for x in r["commit_ms"]),
        "pacer_lag_ms": summarize(x for r in runs for x in r["lag_ms"]) if rate > 0 else None,
        "server_cpu_per_1000_msgs_s": usage["server_cpu_s"] / received * 1000 if received else None,
        "db_commits": batches,
        "db_ops_per_commit": operations / batches if batches else None,
        "loadgen_cpu_s": loadgen_cpu,
        "loadgen_cpu_cores": loadgen_cpu / seconds if seconds > 0 else 0.0,
        **usage,
        "profile": hot,
    }
