"""Two nodes on one PostgreSQL and one Redis: clients on either node meet as on one server.

Each test gets its own Redis (some restart or stop it) and database; the nodes
share the server secret. `resync_seconds` is long unless a test says otherwise,
so what arrives, arrives through Redis and not through the periodic resync.
"""

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from plauder.client import Client, MessageReceived, PresenceChanged
from plauder.client.errors import ClientError, ServerError
from tests.conftest import BACKEND, NUMBERS, ServerProcess, register
from tests.integration.test_messaging import next_of
from tests.services import Postgres, Redis

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="a cluster needs PostgreSQL")

NAMESPACE = "cluster-test"


@dataclass
class Cluster:
    """Nodes a and b, the Redis they share, and the clients a test made."""

    a: ServerProcess
    b: ServerProcess
    redis: Redis
    profiles: Path
    numbers: Iterator[str] = field(default_factory=lambda: iter(NUMBERS))
    clients: list[Client] = field(default_factory=list)

    async def client(self, node: ServerProcess, *, start: bool = True) -> Client:
        """Register a new number through a node and connect it there."""
        client = await register(node, self.profiles, next(self.numbers))
        self.clients.append(client)
        if start:
            await client.start(servers=[node.url])
        return client

    def same_device(self, client: Client) -> Client:
        """A second SDK instance on the profile of client (the same device)."""
        twin = Client(client.profile_dir, client.number)
        self.clients.append(twin)
        return twin


@pytest.fixture
def cluster_factory(
    redis: Redis,  # first: set up before and stopped after the servers
    postgres: Postgres,
    server_factory: Callable[..., ServerProcess],
    tmp_path: Path,
) -> Callable[..., Cluster]:
    """Start nodes a and b with extra options."""
    secret = tmp_path / "server.key"
    secret.write_bytes(bytes(range(32)))  # every node needs the same one
    secret.chmod(0o600)

    def make(**options: object) -> Cluster:
        shared = {
            "database": postgres.create_database(),
            "redis": redis.url,
            "redis_namespace": NAMESPACE,
            "secret_file": str(secret),
            "resync_seconds": 300,
            **options,
        }
        a = server_factory("a", node_id="a", **shared)
        b = server_factory("b", node_id="b", **shared)
        return Cluster(a, b, redis, tmp_path / "profiles")

    return make


@pytest.fixture
async def cluster(cluster_factory: Callable[..., Cluster]) -> AsyncIterator[Cluster]:
    """Two nodes with default options; clients closed at the end."""
    c = cluster_factory()
    yield c
    for client in c.clients:
        await client.close()


async def metrics(node: ServerProcess) -> dict[str, int]:
    """The node's /metrics as numbers."""
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        text = await resp.text()
    return {
        name.removeprefix("plauder_"): int(value)
        for name, value in (line.split() for line in text.splitlines())
    }


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll an async condition until it holds, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


async def replaced(client: Client, timeout: float = 5.0) -> bool:
    """Whether the client's connection gave way (closed with 4003) within the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await client.wait_connected(timeout=1)
        except ClientError as exc:
            return "gives way" in str(exc)
        await asyncio.sleep(0.05)
    return False


async def test_messages_cross_nodes_live(cluster: Cluster) -> None:
    alice = await cluster.client(cluster.a)
    bob = await cluster.client(cluster.b)
    opened = [(await metrics(n))["connections_opened"] for n in (cluster.a, cluster.b)]

    for i in range(5):
        mid = await alice.send_text(bob.number, f"a to b {i}")
        got = await next_of(bob, MessageReceived, timeout=2)
        assert (got.body, got.id) == (f"a to b {i}", mid)
        reply = await bob.send_text(alice.number, f"b to a {i}")
        back = await next_of(alice, MessageReceived, timeout=2)
        assert (back.body, back.id) == (f"b to a {i}", reply)

    # delivered live through Redis: nobody reconnected, nothing waited for a resync
    assert [(await metrics(n))["connections_opened"] for n in (cluster.a, cluster.b)] == opened
    a, b = await metrics(cluster.a), await metrics(cluster.b)
    assert a["redis_connected"] == b["redis_connected"] == 1
    assert a["cluster_published"] > 0 and b["cluster_received"] > 0


async def test_a_send_stored_by_a_node_that_died_before_routing_it_arrives_live(
    cluster: Cluster,
) -> None:
    """Node b commits alice's send and dies before it routes it; alice repeats it on a.

    The repeat is a duplicate, yet it must reach bob, live on a, at once: not at
    his feed's next resync (300 s here) or reconnect.
    """
    bob = await cluster.client(cluster.a)
    alice = await cluster.client(cluster.b, start=False)
    await alice.start(servers=[cluster.b.url, cluster.a.url])  # b first, then a
    assert alice.server == cluster.b.url
    await alice.send_text(bob.number, "warm-up")  # the Olm session, and bob is live
    assert (await next_of(bob, MessageReceived, timeout=3)).body == "warm-up"
    db = await asyncpg.connect(cluster.a.options["database"])
    try:

        async def queued() -> int:
            return int(await db.fetchval("SELECT count(*) FROM envelopes"))

        async def quiet() -> bool:  # acked, and the delivered receipt too
            return await queued() == 0 and alice.history(bob.number)[-1].status == "delivered"

        await wait_for(quiet, 5, "the warm-up acked and its receipt delivered and acked")

        async def waiting() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%INSERT INTO sent_messages%'"
                )
            )

        async def committed() -> bool:
            return await queued() == 1

        async with db.transaction():
            await db.execute("LOCK TABLE envelopes IN SHARE MODE")  # held until the block ends
            sending = asyncio.create_task(alice.send_text(bob.number, "stored, not routed"))
            await wait_for(waiting, 5, "node b's commit of the send waits for the lock")
            assert cluster.b.proc is not None
            cluster.b.proc.send_signal(signal.SIGSTOP)  # it cannot route what it commits
            await asyncio.sleep(0.2)
        await wait_for(committed, 5, "node b's send committed")  # while b is stopped
    finally:
        await db.close()
        cluster.b.kill()  # its publishes never left it
    mid = await sending  # alice repeats it on a and gets `sent` (a duplicate)
    got = await next_of(bob, MessageReceived, timeout=5)
    assert (got.body, got.id) == ("stored, not routed", mid)


async def test_the_same_device_on_the_other_node_closes_the_first(cluster: Cluster) -> None:
    alice = await cluster.client(cluster.a)
    bob = await cluster.client(cluster.b)

    second = cluster.same_device(bob)
    await second.start(servers=[cluster.a.url])  # bob's device, now on node a
    assert await replaced(bob)  # the old connection on node b gave way
    await second.wait_connected(timeout=1)  # and the new one stays

    await alice.send_text(bob.number, "to the new connection")
    got = await next_of(second, MessageReceived, timeout=3)
    assert got.body == "to the new connection"


async def test_registering_again_on_a_closes_the_old_device_on_b(cluster: Cluster) -> None:
    bob = await cluster.client(cluster.b)
    again = Client(cluster.profiles / "again", bob.number)
    cluster.clients.append(again)
    await again.request_code([cluster.a.url])
    await again.verify(cluster.a.code_for(bob.number))
    assert await replaced(bob)


async def test_presence_across_nodes(cluster: Cluster) -> None:
    alice = await cluster.client(cluster.a)
    bob = await cluster.client(cluster.b, start=False)
    carol = await cluster.client(cluster.b)
    await carol.set_presence_visible(False)

    await alice.watch_presence([bob.number, carol.number])
    first = {e.number: e for e in [await next_of(alice, PresenceChanged) for _ in range(2)]}
    assert first[bob.number].online is False
    assert (first[carol.number].online, first[carol.number].last_seen) == (False, None)

    await bob.start(servers=[cluster.b.url])  # online on b, seen by a watcher on a
    up = await next_of(alice, PresenceChanged, timeout=3)
    assert (up.number, up.online) == (bob.number, True)
    await bob.close()
    down = await next_of(alice, PresenceChanged, timeout=3)
    assert (down.number, down.online) == (bob.number, False)
    assert down.last_seen is not None

    await carol.close()  # hidden: going offline on b pushes nothing to a
    await asyncio.sleep(0.5)
    assert not [e for e in alice.pending_events() if isinstance(e, PresenceChanged)]


async def test_the_code_limit_holds_across_nodes(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(codes_per_number_per_hour=2)
    number = NUMBERS[-1]
    nodes = [cluster.a, cluster.b, cluster.a, cluster.b]
    answers = []
    for i, node in enumerate(nodes):
        client = Client(cluster.profiles / f"asker{i}", number)
        try:
            await client.request_code([node.url])
            answers.append("ok")
        except ServerError as exc:
            answers.append(exc.code)
        finally:
            await client.close()
    assert answers == ["ok", "ok", "rate_limited", "rate_limited"]


async def test_redis_restarted_mid_traffic(cluster: Cluster) -> None:
    alice = await cluster.client(cluster.a)
    bob = await cluster.client(cluster.b)
    opened = [(await metrics(n))["connections_opened"] for n in (cluster.a, cluster.b)]
    confirmed: list[str] = []

    async def send(count: int) -> None:
        for i in range(count):
            with contextlib.suppress(ClientError):  # unconfirmed: the outbox tries again
                confirmed.append(await alice.send_text(bob.number, f"m{i}", timeout=3))
            await asyncio.sleep(0.02)

    traffic = asyncio.create_task(send(60))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(cluster.redis.restart)
    await traffic
    assert len(confirmed) == 60  # the database is the truth: sends never waited for Redis

    async def all_arrived() -> bool:
        return {e.id for e in bob.history(alice.number, limit=200)} >= set(confirmed)

    await wait_for(all_arrived, 5, "every confirmed message at bob")
    received = [e.id for e in bob.history(alice.number, limit=200)]
    assert len(received) == len(set(received))  # exactly once
    bob.pending_events()  # taken: the next message must be a new one

    # both nodes are back on Redis by themselves, and live delivery with them
    await wait_for(lambda: _connected(cluster), 5, "both nodes connected to Redis again")
    mid = await alice.send_text(bob.number, "after the restart")
    got = await next_of(bob, MessageReceived, timeout=2)
    assert got.id == mid
    assert [(await metrics(n))["connections_opened"] for n in (cluster.a, cluster.b)] == opened
    assert (await metrics(cluster.b))["cluster_resyncs"] >= 1


async def _connected(cluster: Cluster) -> bool:
    return all([(await metrics(n))["redis_connected"] == 1 for n in (cluster.a, cluster.b)])


async def test_redis_down_sends_succeed_codes_refused(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(resync_seconds=1)
    try:
        alice = await cluster.client(cluster.a)
        bob = await cluster.client(cluster.b)
        cluster.redis.stop()
        await wait_for(lambda: _disconnected(cluster), 5, "both nodes notice Redis is gone")

        mid = await alice.send_text(bob.number, "while Redis is down", timeout=3)
        got = await next_of(bob, MessageReceived, timeout=4)  # the periodic resync finds it
        assert got.id == mid

        asker = Client(cluster.profiles / "asker", NUMBERS[-1])
        try:
            with pytest.raises(ServerError) as refused:
                await asker.request_code([cluster.a.url])
            assert refused.value.code == "unavailable"  # fail closed: codes cost money
        finally:
            await asker.close()

        cluster.redis.start()
        await wait_for(lambda: _connected(cluster), 10, "both nodes back on Redis")
        mid = await alice.send_text(bob.number, "Redis is back")
        assert (await next_of(bob, MessageReceived, timeout=2)).id == mid
        text = cluster.a.log_text()
        assert text.count("redis unreachable") == 1  # logged once per outage
    finally:
        for client in cluster.clients:
            await client.close()


async def _disconnected(cluster: Cluster) -> bool:
    return all([(await metrics(n))["redis_connected"] == 0 for n in (cluster.a, cluster.b)])


async def test_a_nodes_registry_entries_expire(cluster: Cluster) -> None:
    bob = await cluster.client(cluster.b)
    assert bob.device_id is not None
    r = aioredis.from_url(cluster.redis.url)
    try:
        keys = [k async for k in r.scan_iter(f"{NAMESPACE}:dev:*")]
        holders = [await r.get(k) for k in keys]
        assert [h.split(b":", 1)[1] for h in holders] == [b"b"]
        ttl = await r.pttl(keys[0])
        assert 0 < ttl <= 15_000  # a killed node's entries vanish within 15 s
        seconds, micros = await r.time()
        now_ms = seconds * 1000 + micros // 1000
        live = {
            m.decode(): score
            for m, score in await r.zrange(f"{NAMESPACE}:nodes", 0, -1, withscores=True)
        }
        assert set(live) == {"a", "b"}
        assert 0 < live["b"] - now_ms <= 15_000  # and it stops counting as live
        # its online counts outlive that, for another node to reap (tell watchers)
        assert 15_000 < await r.pttl(f"{NAMESPACE}:online:b") <= 60_000
    finally:
        await r.aclose()
