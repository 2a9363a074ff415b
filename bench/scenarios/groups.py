"""Scenario `group-fanout`: one group of many online members; senders post at a fixed rate.

Phases on one server: register every member; connect only the creator, create the group
with all of them and send `offline_messages` while the others are offline, measuring the
database's growth (nothing is acked, so nothing is deleted); connect the other members
and time how long they take to receive those; warm up; then the measured phase: the
senders post `rate` group messages/s for `duration` s, scheduled at fixed times. For each
message: the time from its scheduled send to its delivery at the first and the last
member; for each envelope: to its member.
"""

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path

from bench import harness, storage
from bench.fanout import BodyShape, GroupWorker
from bench.harness import Env, Settings, environment, generators, split
from bench.stats import summarize
from bench.workers import Args, Pool

OFFLINE, WARMUP, MEASURED = 1, 2, 3  # phases, as the message bodies carry them
PER_DEVICE_TARGET = 64  # storage target: 2 x ciphertext + 64 bytes per member device


@dataclass
class GroupParams:
    """Sizes of the group-fanout scenario."""

    members: int = 1000  # accounts in the group, one connection each
    senders: int = 10  # members that post, spread over the generators
    rate: float = 20.0  # group messages/s in total
    duration: float = 20.0  # seconds of the measured phase
    warmup: float = 2.0  # seconds at `rate` before it
    offline_messages: int = 50  # stored while the other members are offline
    workers: int = 2  # generator processes
    concurrency: int = 128  # registrations/connections in flight, over all generators
    timeout: float = 120.0  # of each phase


@dataclass
class _Group:
    """Who is where: each generator's accounts and senders."""

    chunks: list[list[int]]
    senders: list[int]

    @property
    def creator(self) -> int:
        return self.senders[0]

    @property
    def members(self) -> int:
        return sum(len(c) for c in self.chunks)

    def send_args(self, phase: int, senders: list[int], rate: float, total: int) -> list[Args]:
        """Per generator: its share of `total` messages and of `rate`, by its senders."""
        own = [len([s for s in senders if s in chunk]) for chunk in self.chunks]
        counts = [total * n // len(senders) for n in own]
        for w in sorted(range(len(own)), key=lambda w: -own[w])[: total - sum(counts)]:
            counts[w] += 1
        return [
            {"phase": phase, "senders": senders, "rate": rate * n / len(senders), "count": c}
            for n, c in zip(own, counts, strict=True)
        ]

    def expected(self, sent: list[tuple[int, int]]) -> list[int]:
        """Per generator: envelopes its members get of these messages (not the sender's)."""
        return [sum(len(c) - (s in c) for s, _ in sent) for c in self.chunks]


async def run_groups(p: GroupParams, settings: Settings) -> list[Args]:
    """Run the scenario; a `group-storage` and a `group-fanout` result."""
    if p.members < 2 or not 1 <= p.senders <= p.members:
        raise ValueError("group-fanout needs 2 or more members and 1 to `members` senders")
    shape = BodyShape.of_text()
    everyone = list(range(p.members))
    senders = [everyone[k * p.members // p.senders] for k in range(p.senders)]
    group = _Group(split(everyone, p.workers), senders)
    prefix = "pg-" if settings.backend == "postgres" else ""
    async with environment(settings) as env:
        specs = [
            env.spec(
                chunk,
                senders=[s for s in senders if s in chunk],
                session_id=shape.session_id,
                ciphertext_bytes=shape.ciphertext_bytes,
            )
            for chunk in group.chunks
        ]
        with generators(env, GroupWorker, specs) as pool:
            setup = {"ws_url": env.server.ws_url, "concurrency": p.concurrency // len(pool)}
            reg = await pool.call("register", {**setup, "timeout": 600}, 660)
            if sum(r["done"] for r in reg) != p.members:
                raise RuntimeError(f"not all members registered: {[r['errors'] for r in reg]}")
            await _connect(pool, {**setup, "only": [group.creator]}, 1)
            gid = secrets.token_bytes(16)
            others = [i for i in everyone if i != group.creator]
            args = {"gid": gid, "creator": group.creator, "members": others}
            created = [r for r in await pool.call("create", args, 180) if r["created"]]
            devices = max(r["devices"] for r in await pool.call("digests", {"timeout": 60}, 120))
            stored = await _offline(env, pool, p, group, shape, devices)
            start = await _connect(pool, setup, p.members - 1)
            stored.update(await _drain(pool, p, group, stored.pop("sent_keys"), start))
            await pool.call("digests", {"timeout": 60}, 120)
            warm = group.send_args(WARMUP, senders, p.rate, round(p.rate * p.warmup))
            await _traffic(pool, p, group, warm)
            await asyncio.sleep(1.0)  # let the server settle (acks, WAL checkpoints)
            profile = None
            if settings.profile_dir is not None:
                name = f"group-fanout-{settings.backend}-{p.members}-{p.rate:g}"
                profile = settings.profile_dir / f"{name}.txt"
            fanout = await _measured(env, pool, p, group, profile)
    common = {
        "members": p.members,
        "senders": p.senders,
        "generators": len(specs),
        "backend": settings.backend,
        "server_workers": settings.server_workers,
        "ack_interval_ms": settings.ack_interval * 1000,
        "member_devices": devices,
        "group_version": created[0]["version"] if created else None,
        "body_bytes": shape.body_bytes,
        "ciphertext_bytes": shape.ciphertext_bytes,
    }
    return [
        {"section": prefix + "group-storage", **common, **stored},
        {"section": prefix + "group-fanout", **common, **fanout},
    ]


async def _connect(pool: Pool, args: Args, expected: int) -> int:
    """Connect the accounts not yet connected (or `only` these); when it started (ns)."""
    conn = await pool.call("connect", {**args, "timeout": 600}, 660)
    if sum(r["done"] for r in conn) != expected:
        raise RuntimeError(f"not all members connected: {[r['errors'] for r in conn]}")
    return min(int(r["start_ns"]) for r in conn)


async def _offline(
    env: Env, pool: Pool, p: GroupParams, group: _Group, shape: BodyShape, devices: int
) -> Args:
    """The creator alone is online and sends; the database's growth per group message."""
    db = env.server.data / "plauder.db"
    before = storage.usage(env.stack, db)
    cpu_before = env.snapshot()
    args = group.send_args(OFFLINE, [group.creator], p.rate, p.offline_messages)
    runs = await pool.call("send", [{**a, "timeout": p.timeout} for a in args], p.timeout + 60)
    cpu_after = env.snapshot()
    after = storage.usage(env.stack, db)
    sent = [tuple(k) for r in runs for k in r["sent"]]
    if not sent:
        raise RuntimeError(f"no group message was stored: {[r['errors'] for r in runs]}")
    grown = storage.growth(before, after, len(sent))
    recipients = devices - 1  # every member device but the sender's (bench accounts have one)
    target = 2 * shape.body_bytes + PER_DEVICE_TARGET * recipients
    per_message = storage.total(grown)
    cpu = cpu_after.cpu_since(cpu_before)
    return {
        "messages": len(sent),
        "send_errors": harness.merge_errors(runs),
        "recipient_devices": recipients,
        "bytes_per_message": per_message,
        "payload_per_message": storage.total(grown, "payload")
        if any("payload" in t for t in grown.values())
        else None,
        "bytes_per_device": per_message / recipients,
        "target_bytes": target,
        "of_target": per_message / target,
        "tables_per_message": grown,
        "database_bytes_after": storage.total(after),
        "server_cpu_per_group_msg_ms": cpu / len(sent) * 1000,
        "commit_latency_ms": summarize(x for r in runs for x in r["commit_ms"]),
        "sent_keys": sent,
    }


async def _drain(
    pool: Pool, p: GroupParams, group: _Group, sent: list[tuple[int, int]], start: int
) -> Args:
    """The offline members get the stored messages: from their connects' start to the last."""
    expect = group.expected(sent)
    args = [{"phase": OFFLINE, "expect": n, "timeout": p.timeout} for n in expect]
    runs = await pool.call("collect", args, p.timeout + 60)
    received = sum(r["received"] for r in runs)
    last = max((m[4] for r in runs for m in r["messages"]), default=start)
    seconds = (last - start) / 1e9
    return {
        "drain_envelopes": received,
        "drain_expected": sum(expect),
        "drain_seconds": seconds,
        "drain_envelopes_per_s": received / seconds if seconds > 0 else None,
        "notices_received": sum(r["notices"] for r in runs),
    }


async def _traffic(pool: Pool, p: GroupParams, group: _Group, args: list[Args]) -> Args:
    """Send a phase and collect it everywhere; the merged figures."""
    sends = await pool.call("send", [{**a, "timeout": p.timeout} for a in args], p.timeout + 60)
    sent = [(int(s), int(t)) for r in sends for s, t in r["sent"]]
    expect = group.expected(sent)
    phase = args[0]["phase"]
    collect = [{"phase": phase, "expect": n, "timeout": p.timeout} for n in expect]
    runs = await pool.call("collect", collect, p.timeout + 60)
    messages: dict[tuple[int, int], list[int]] = {}
    for r in runs:
        for sender, stamp, count, first, last in r["messages"]:
            entry = messages.setdefault((sender, stamp), [0, first, last])
            entry[0] += count
            entry[1], entry[2] = min(entry[1], first), max(entry[2], last)
    recipients = group.members - 1
    complete = [(s, t) for s, t in sent if messages.get((s, t), [0])[0] >= recipients]
    received = sum(r["received"] for r in runs)
    start = min(r["start_ns"] for r in sends)
    end = max((e[2] for e in messages.values()), default=start)
    seconds = (end - start) / 1e9
    return {
        "offered_per_s": p.rate,
        "sent": len(sent),
        "send_errors": harness.merge_errors(sends),
        "complete": len(complete),
        "incomplete": len(sent) - len(complete),
        "envelopes": received,
        "envelopes_expected": sum(expect),
        "receive_errors": harness.merge_errors(runs),
        "seconds": seconds,
        "delivered_envelopes_per_s": received / seconds if seconds > 0 else 0.0,
        "last_member_ms": summarize((messages[k][2] - k[1]) / 1e6 for k in complete),
        "first_member_ms": summarize((messages[k][1] - k[1]) / 1e6 for k in complete),
        "envelope_ms": summarize(x for r in runs for x in r["latency_ms"]),
        "commit_latency_ms": summarize(x for r in sends for x in r["commit_ms"]),
        "pacer_lag_ms": summarize(x for r in sends for x in r["lag_ms"]),
        "loadgen_cpu_s": sum(r["cpu"] for r in sends + runs),
    }


async def _measured(
    env: Env, pool: Pool, p: GroupParams, group: _Group, profile: Path | None
) -> Args:
    """The measured phase, with the server's CPU and (with --profile) its hot spots."""
    profiler = env.profiler(profile)
    counters_before = await env.counters()
    stack_before = env.stack_snapshot()
    before = env.snapshot()
    args = group.send_args(MEASURED, group.senders, p.rate, round(p.rate * p.duration))
    result = await _traffic(pool, p, group, args)
    after = env.snapshot()
    stack_after = env.stack_snapshot()
    counters_after = await env.counters()
    hot = profiler.stop() if profiler is not None else None
    usage = harness.server_usage(before, after)
    stack = harness.stack_usage(stack_before, stack_after, result["sent"])
    stack.pop("stack_cpu_per_1000")
    sent, seconds = result["sent"], result["seconds"]
    commits = counters_after["db_commits"] - counters_before["db_commits"]
    operations = counters_after.get("db_operations", 0) - counters_before.get("db_operations", 0)
    if result["incomplete"] or result["send_errors"] or result["receive_errors"]:
        print(
            f"bench: WARNING: {result['incomplete']} of {sent} group messages not at every "
            f"member; errors {result['send_errors']} {result['receive_errors']}",
            flush=True,
        )
    return {
        **result,
        "server_cpu_per_group_msg_ms": usage["server_cpu_s"] / sent * 1000 if sent else None,
        "server_cpu_per_1000_envelopes_s": usage["server_cpu_s"] / result["envelopes"] * 1000
        if result["envelopes"]
        else None,
        "db_commits": commits,
        "db_operations_per_group_msg": operations / sent if sent and operations else None,
        "loadgen_cpu_cores": result["loadgen_cpu_s"] / seconds if seconds > 0 else 0.0,
        **usage,
        **stack,
        "profile": hot,
    }
