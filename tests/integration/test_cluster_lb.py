"""Three nodes behind HAProxy on one PostgreSQL and one Redis, and things going wrong mid-traffic.

50 SDK clients connect through the load balancer (round robin spreads them
over the nodes) and exchange messages in 25 pairs. While they do, a node is
killed with SIGKILL, Redis is restarted, or PostgreSQL is stopped for a few
seconds. Every message whose send got `sent` must reach its receiver exactly
once, and the others must follow once things recover.
"""

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from plauder.client import Client
from plauder.client.errors import ClientError
from tests.conftest import BACKEND, NUMBERS, ServerProcess, code_for
from tests.services import Haproxy, Nginx, Postgres, Redis

pytestmark = pytest.mark.skipif(
    BACKEND != "postgres", reason="a cluster needs PostgreSQL and Redis"
)

NODES = ("a", "b", "c")
PAIRS = 25
SETTLE_SECONDS = 60.0


@dataclass
class Cluster:
    """The nodes, the load balancer in front of them, and what they share."""

    nodes: dict[str, ServerProcess]
    lb: Haproxy | Nginx
    redis: Redis
    postgres: Postgres
    clients: list[Client] = field(default_factory=list)

    def code_for(self, number: str) -> str:
        """The code whichever node handled the request printed."""
        return code_for(number, list(self.nodes.values()))


@pytest.fixture(params=["haproxy"])
async def cluster(
    request: pytest.FixtureRequest,
    server_factory: Callable[..., ServerProcess],
    postgres: Postgres,
    redis: Redis,
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    """Three nodes, a load balancer, and 50 clients registered through it and started."""
    url = postgres.create_database()
    secret = tmp_path / "server.key"
    secret.write_bytes(bytes(range(32)))  # every node needs the same one
    secret.chmod(0o600)
    nodes = {
        name: server_factory(
            name,
            database=url,
            redis=redis.url,
            redis_namespace=url.rsplit("/", 1)[1],
            node_id=name,
            secret_file=str(secret),
            drain_seconds=1,
        )
        for name in NODES
    }
    ports = [node.port for node in nodes.values()]
    lb = Haproxy(ports) if request.param == "haproxy" else Nginx(ports)
    lb.start()
    c = Cluster(nodes, lb, redis, postgres)
    try:
        for number in NUMBERS[: 2 * PAIRS]:
            client = Client(tmp_path / "profiles" / number.lstrip("+"), number)
            await client.request_code([lb.url])
            await client.verify(c.code_for(number))
            c.clients.append(client)
        await asyncio.gather(*(client.start() for client in c.clients))
        yield c
    finally:
        for client in c.clients:
            await client.close()
        lb.stop()


@dataclass
class Traffic:
    """What the senders sent and which sends the server confirmed."""

    confirmed: dict[tuple[int, str], None] = field(default_factory=dict)
    attempted: dict[tuple[int, str], None] = field(default_factory=dict)
    failures: int = 0


async def exchange(c: Cluster, rounds: int, label: str, traffic: Traffic) -> None:
    """Each sender sends `rounds` messages to its partner, one after the other."""

    async def sender(i: int) -> None:
        me, peer = c.clients[2 * i], c.clients[2 * i + 1]
        for n in range(rounds):
            text = f"{label} {i}/{n}"
            traffic.attempted[(i, text)] = None
            try:
                await me.send_text(peer.number, text, timeout=3)
            except ClientError:
                traffic.failures += 1  # not confirmed: stays queued and goes out later
            else:
                traffic.confirmed[(i, text)] = None
            await asyncio.sleep(0.05)

    await asyncio.gather(*(sender(i) for i in range(PAIRS)))


async def assert_delivered_once(c: Cluster, traffic: Traffic, label: str) -> None:
    """Every confirmed (and in the end every attempted) message arrives exactly once."""
    deadline = time.monotonic() + SETTLE_SECONDS
    missing: list[tuple[int, str]] = []
    while time.monotonic() < deadline:
        missing = []
        for i, text in traffic.attempted:
            me, peer = c.clients[2 * i], c.clients[2 * i + 1]
            texts = [e.body for e in peer.history(me.number, limit=10_000)]
            if text not in texts:
                missing.append((i, text))
        if not missing:
            break
        await asyncio.sleep(0.25)
    confirmed_missing = [m for m in missing if m in traffic.confirmed]
    assert not confirmed_missing, f"confirmed but never delivered: {confirmed_missing[:5]}"
    assert not missing, f"queued sends never went out: {missing[:5]}"
    for i in range(PAIRS):
        me, peer = c.clients[2 * i], c.clients[2 * i + 1]
        texts = [e.body for e in peer.history(me.number, limit=10_000) if label in e.body]
        assert len(texts) == len(set(texts)), f"pair {i} saw a message twice"


@pytest.mark.parametrize("cluster", ["haproxy", "nginx"], indirect=True)
async def test_messages_flow_across_the_nodes_behind_a_balancer(cluster: Cluster) -> None:
    traffic = Traffic()
    await exchange(cluster, 4, "ruhig", traffic)
    assert traffic.failures == 0
    await assert_delivered_once(cluster, traffic, "ruhig")


async def test_a_node_killed_mid_traffic_loses_nothing(cluster: Cluster) -> None:
    traffic = Traffic()
    sending = asyncio.create_task(exchange(cluster, 12, "kill", traffic))
    await asyncio.sleep(1.0)
    cluster.nodes["b"].kill()  # SIGKILL: its clients reconnect through HAProxy elsewhere
    await sending
    await assert_delivered_once(cluster, traffic, "kill")
    assert len(traffic.confirmed) >= len(traffic.attempted) // 2


async def test_redis_restarted_mid_traffic_loses_nothing(cluster: Cluster) -> None:
    traffic = Traffic()
    sending = asyncio.create_task(exchange(cluster, 12, "redis", traffic))
    await asyncio.sleep(1.0)
    cluster.redis.restart()  # all routing state is gone; nodes re-register and resync
    await sending
    await assert_delivered_once(cluster, traffic, "redis")
    for node in cluster.nodes.values():
        assert node.alive()


async def test_postgres_stopped_for_seconds_loses_nothing(cluster: Cluster) -> None:
    traffic = Traffic()
    sending = asyncio.create_task(exchange(cluster, 16, "pg", traffic))
    await asyncio.sleep(1.0)
    cluster.postgres.stop()
    try:
        await asyncio.sleep(3.0)
    finally:
        cluster.postgres.start()
    await sending
    assert traffic.failures > 0  # sends during the outage were not confirmed...
    await assert_delivered_once(cluster, traffic, "pg")  # ...and went out afterwards
    for node in cluster.nodes.values():
        assert node.alive()


async def test_a_node_drained_for_an_upgrade_hands_its_clients_over(cluster: Cluster) -> None:
    node = cluster.nodes["a"]
    traffic = Traffic()
    sending = asyncio.create_task(exchange(cluster, 12, "drain", traffic))
    await asyncio.sleep(1.0)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)  # drain_seconds=1: /health says 503 first
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(5):
            while True:
                async with session.get(node.url + "/health") as answer:
                    if answer.status == 503:
                        assert (await answer.json())["status"] == "draining"
                        break
                await asyncio.sleep(0.05)
    assert node.proc.wait(30) == 0
    assert "stopped" in node.log_text()
    await sending
    assert traffic.failures == 0  # the clients moved over without a send going unconfirmed
    await assert_delivered_once(cluster, traffic, "drain")
