"""The Redis link, shared presence counts and the shared limit, in this process on a real Redis.

Two `RedisLink`s on one Redis stand for two nodes. The end-to-end behaviour
with real servers and clients is in tests/integration/test_cluster.py.
"""

import asyncio
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from plauder.server.cluster import RedisLimiter, RedisLink, RedisPresence
from plauder.server.errors import ClusterUnavailable
from plauder.server.presence import Notify
from tests.services import Redis

ALICE = "+4915100000001"
BOB = "+4915100000002"


@pytest.fixture
async def node(redis: Redis) -> AsyncIterator[Callable[[str], RedisLink]]:
    """Make links (nodes) in one namespace; they are started by the test and closed here."""
    namespace = secrets.token_hex(4)
    links: list[RedisLink] = []

    def make(name: str) -> RedisLink:
        link = RedisLink(redis.url, namespace, name, heartbeat_seconds=0.2)
        links.append(link)
        return link

    yield make
    for link in links:
        await link.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until condition() holds, failing after timeout seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_publish_reaches_the_subscribed_node(node: Callable[[str], RedisLink]) -> None:
    a, b = node("a"), node("b")
    got: list[tuple[bytes, bytes]] = []

    async def handle(channel: bytes, data: bytes) -> None:
        got.append((channel, data))

    b.route(b"test:", handle)
    await a.start()
    await b.start()
    assert a.connected and b.connected
    confirmed = b.subscribe(b"test:1")
    assert confirmed is not None
    await asyncio.wait_for(confirmed, 2)
    for i in range(100):
        a.publish(b"test:1", b"m%d" % i)
    a.publish(b"test:2", b"nobody listens")
    await until(lambda: len(got) == 100)
    assert got == [(b"test:1", b"m%d" % i) for i in range(100)]  # in order
    assert (a.published, b.received, a.dropped) == (101, 100, 0)

    b.unsubscribe(b"test:1")
    await asyncio.sleep(0.1)
    a.publish(b"test:1", b"too late")
    await asyncio.sleep(0.2)
    assert len(got) == 100


async def test_an_outage_is_survived_and_reported(
    redis: Redis, node: Callable[[str], RedisLink]
) -> None:
    a, b = node("a"), node("b")
    got: list[bytes] = []
    reconnected: list[str] = []

    async def handle(channel: bytes, data: bytes) -> None:
        got.append(data)

    async def hook() -> None:
        reconnected.append("b")

    b.route(b"test:", handle)
    b.on_connect(hook)
    b.subscribe(b"test:1")
    await a.start()
    await b.start()
    assert reconnected == ["b"]

    redis.stop()
    await until(lambda: not a.connected and not b.connected)
    a.publish(b"test:1", b"lost")  # dropped at once, never waits
    with pytest.raises(ClusterUnavailable):
        await RedisLimiter(a, "code", 1.0, 1).take(ALICE)  # commands fail at once too
    assert a.dropped == 1
    assert a.take_lost() == ({b"test:1"}, False)

    redis.start()
    await until(lambda: a.connected and b.connected, timeout=10)
    assert reconnected == ["b", "b"]  # the hook ran again
    a.publish(b"test:1", b"after")  # b subscribed again by itself
    await until(lambda: got == [b"after"])
    assert (a.outages, b.outages) == (1, 1)


async def test_the_shared_limit_counts_every_node(node: Callable[[str], RedisLink]) -> None:
    a, b = node("a"), node("b")
    await a.start()
    await b.start()
    on_a = RedisLimiter(a, "code", rate=1 / 3600, burst=2)
    on_b = RedisLimiter(b, "code", rate=1 / 3600, burst=2)
    assert [await on_a.take(ALICE), await on_b.take(ALICE), await on_a.take(ALICE)] == [
        True,
        True,
        False,
    ]
    assert await on_b.take(BOB)  # another number has its own limit
    many = await asyncio.gather(*(on_b.take(f"+49151000009{i:02d}") for i in range(20)))
    assert all(many)


async def test_a_burst_from_two_nodes_at_once_gets_exactly_the_burst(
    node: Callable[[str], RedisLink],
) -> None:
    a, b = node("a"), node("b")
    await a.start()
    await b.start()
    limiters = [RedisLimiter(link, "code", rate=1 / 3600, burst=5) for link in (a, b)]
    answers = await asyncio.gather(*(limiters[i % 2].take(ALICE) for i in range(40)))
    assert answers.count(True) == 5


async def test_presence_counts_span_the_nodes(node: Callable[[str], RedisLink]) -> None:
    a, b = node("a"), node("b")
    on_a, on_b = RedisPresence(a), RedisPresence(b)
    heard: list[tuple[str, str, bool]] = []

    def recorder(where: str) -> Notify:
        async def notify(number: str, changed_visibility: bool) -> None:
            heard.append((where, number, changed_visibility))

        return notify

    async def lost(account_id: int, number: str) -> None:
        raise AssertionError("no node died")

    on_a.listen(recorder("a"), lost)
    on_b.listen(recorder("b"), lost)
    await a.start()
    await b.start()

    assert await on_a.up(1, ALICE) is True  # the account's first device anywhere
    assert await on_b.up(1, ALICE) is False
    assert await on_b.online([ALICE, BOB]) == [True, False]
    assert await on_a.down(1, ALICE) is False  # one is still online on b
    assert await on_a.online([ALICE]) == [True]
    assert await on_b.down(1, ALICE) is True  # the last one
    assert await on_a.online([ALICE]) == [False]

    await on_b.announce(BOB, True)
    await until(lambda: len(heard) == 2)
    assert sorted(heard) == [("a", BOB, True), ("b", BOB, True)]  # each node once


async def test_counts_come_back_after_redis_lost_them(
    redis: Redis, node: Callable[[str], RedisLink]
) -> None:
    a, b = node("a"), node("b")
    on_a, on_b = RedisPresence(a), RedisPresence(b)
    await a.start()
    await b.start()
    await on_a.up(1, ALICE)

    redis.restart()  # an empty Redis: every count is gone
    assert await on_a.online([ALICE]) == [True]  # answered from its own counts meanwhile
    await until(lambda: a.connected and b.connected, timeout=10)
    async with asyncio.timeout(5):
        while await on_b.online([ALICE]) != [True]:  # node a wrote its counts back
            await asyncio.sleep(0.05)


DOOMED = """
import asyncio, sys
from plauder.server.cluster import RedisLink, RedisPresence

async def main() -> None:
    url, namespace, alice, bob = sys.argv[1:]
    link = RedisLink(url, namespace, "doomed", heartbeat_seconds=0.2, node_ttl_ms=600)
    presence = RedisPresence(link)
    await link.start()
    await presence.up(1, alice)
    await presence.up(2, bob)
    print("online", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_accounts_of_a_killed_node_go_offline(redis: Redis) -> None:
    namespace = secrets.token_hex(4)
    survivor = RedisLink(redis.url, namespace, "survivor", heartbeat_seconds=0.2)
    presence = RedisPresence(survivor)
    gone: list[tuple[int, str]] = []

    async def notify(number: str, changed_visibility: bool) -> None:
        pass

    async def lost(account_id: int, number: str) -> None:
        gone.append((account_id, number))

    presence.listen(notify, lost)
    await survivor.start()
    doomed = subprocess.Popen(
        [sys.executable, "-c", DOOMED, redis.url, namespace, ALICE, BOB],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout is not None
        assert await asyncio.to_thread(doomed.stdout.readline) == "online\n"
        await presence.up(2, BOB)  # bob is online here too
        assert await presence.online([ALICE, BOB]) == [True, True]
        doomed.kill()  # SIGKILL: no goodbye
        await until(lambda: bool(gone), timeout=5)
        assert gone == [(1, ALICE)]  # once, and only the account online nowhere else
        assert await presence.online([ALICE, BOB]) == [False, True]
    finally:
        doomed.kill()
        doomed.wait(5)
        if doomed.stdout is not None:
            doomed.stdout.close()
        await survivor.close()
