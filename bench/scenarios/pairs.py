"""Scenario `pairs`: N/2 senders each send M messages to their own receiver."""

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (
    Env,
    Settings,
    environment,
    generators,
    merge_errors,
    server_usage,
    split,
    stack_usage,
)
from bench.loadgen import LoadWorker
from bench.stats import summarize
from bench.traffic import Traffic
from bench.workers import Args, Pool

MAX = 0.0  # rate meaning "as fast as the window allows" (closed loop)
# Where each pair's ends connect: `any` both to the first node (with server workers the
# kernel spreads connections over them, so about half the pairs cross processes);
# `cross` senders to the first node and receivers to the second; `same` both to the first.
PLACEMENTS = ("any", "cross", "same")


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
    nodes: int = 1  # server nodes (several need the postgres backend)
    placements: list[str] = field(default_factory=lambda: ["any"])  # see PLACEMENTS
    timeout: float = 300.0  # of each phase


class PairsWorker(LoadWorker):
    """Owns some pairs (both ends) and runs traffic between them."""

    async def cmd_run(
        self, messages: int, in_flight: int, rate: float, duration: float, timeout: float
    ) -> Args:
        """One phase: closed loop (rate 0) or paced at `rate` messages/s from this worker."""
        pairs = [(self.wires[a], self.idents[b].number, self.wires[b]) for a, b in self.pairs]
        traffic = Traffic(pairs, in_flight, self.ack_interval)
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
    """Register the clients once; for each placement connect them and run each phase.

    One result per phase, in order of placements, then rates.
    """
    clients = p.clients - p.clients % 2
    pairs = [(i, i + 1) for i in range(0, clients, 2)]
    async with environment(settings, p.nodes) as env:
        specs = []
        chunks = split(pairs, p.workers)
        for chunk in chunks:
            specs.append(env.spec([i for pair in chunk for i in pair], pairs=chunk))
        with generators(env, PairsWorker, specs) as pool:
            setup = {"ws_url": env.server.ws_url, "concurrency": p.concurrency // len(pool)}
            reg = await pool.call("register", {**setup, "timeout": 600}, 660)
            if sum(r["done"] for r in reg) != clients:
                raise RuntimeError(f"not all clients registered: {[r['errors'] for r in reg]}")
            results = []
            for n, placement in enumerate(p.placements):
                if n:
                    await pool.call("disconnect", {"timeout": 120}, 180)
                await _connect(env, pool, chunks, placement, setup)
                if p.warmup:
                    await _phase(env, pool, p, MAX, p.warmup)
                for rate in p.rates:
                    profile = None
                    if settings.profile_dir is not None:
                        name = f"pairs-{settings.backend}-{placement}-{clients}-{rate or 'max'}"
                        profile = settings.profile_dir / f"{name}.txt"
                    result = await _phase(env, pool, p, rate, p.messages, profile)
                    result.update(
                        clients=clients,
                        generators=len(pool),
                        in_flight=p.in_flight,
                        backend=settings.backend,
                        server_workers=settings.server_workers,
                        ack_interval_ms=settings.ack_interval * 1000,
                        nodes=p.nodes,
                        placement=placement,
                    )
                    results.append(result)
    return results


async def _connect(
    env: Env, pool: Pool, chunks: list[list[tuple[int, int]]], placement: str, setup: Args
) -> None:
    """Connect every client: all to the first node, or each receiver to the second."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}: choose from {PLACEMENTS}")
    per_worker = []
    for chunk in chunks:
        urls = {}
        if placement == "cross":
            urls = {b: env.servers[1].ws_url for _, b in chunk}
        per_worker.append({**setup, "timeout": 600, "urls": urls})
    conn = await pool.call("connect", per_worker, 660)
    expected = 2 * sum(len(c) for c in chunks)
    if sum(r["done"] for r in conn) != expected:
        raise RuntimeError(f"not all clients connected: {[r['errors'] for r in conn]}")


async def _phase(
    env: Env, pool: Pool, p: PairsParams, rate: float, messages: int, profile: Path | None = None
) -> Args:
    await asyncio.sleep(1.0)  # let the server settle (acks, WAL checkpoints)
    profiler = env.profiler(profile)
    counters_before = await env.counters()
    stack_before = env.stack_snapshot()
    before = env.snapshot()
    args = {
        "messages": messages,
        "in_flight": p.in_flight,
        "rate": rate / len(pool),
        "duration": p.duration,
        "timeout": p.timeout,
    }
    runs = await pool.call("run", args, p.timeout + 60)
    after = env.snapshot()
    stack_after = env.stack_snapshot()
    counters_after = await env.counters()
    hot = profiler.stop() if profiler is not None else None
    seconds = (max(r["last_ns"] for r in runs) - min(r["first_ns"] for r in runs)) / 1e9
    received = sum(r["received"] for r in runs)
    errors = merge_errors(runs)
    counted = {k: counters_after[k] - counters_before[k] for k in counters_after}
    commits = counted["db_commits"]
    sent = sum(r["sent"] for r in runs)
    if errors or received < sent:
        print(f"bench: WARNING: {received} of {sent} delivered; errors {errors}", flush=True)
    loadgen_cpu = sum(r["cpu"] for r in runs)
    usage = server_usage(before, after)
    stack = stack_usage(stack_before, stack_after, received)
    per_message = usage["server_cpu_s"] / received * 1000 if received else None
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
        "server_cpu_per_1000_msgs_s": per_message,
        "total_cpu_per_1000_msgs_s": (per_message or 0.0) + stack.pop("stack_cpu_per_1000"),
        "db_commits": commits,
        "db_ops_per_commit": counted["db_operations"] / commits
        if commits and "db_operations" in counted
        else None,
        "messages_per_commit": sent / commits if commits else None,
        "wal_bytes_per_msg": counted["wal_bytes"] / received
        if received and "wal_bytes" in counted
        else None,
        "loadgen_cpu_s": loadgen_cpu,
        "loadgen_cpu_cores": loadgen_cpu / seconds if seconds > 0 else 0.0,
        **usage,
        **stack,
        "profile": hot,
    }
