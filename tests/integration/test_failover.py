"""Several server URLs: the SDK and the CLI move on to the next when one fails.

Real `plauder serve` processes and the real SDK and CLI. A node that "comes back
elsewhere" is the same server process restarted on another port with its data:
to the client that is another URL of its list that holds its queue. With
PostgreSQL and Redis (`PLAUDER_TEST_BACKEND=postgres`), two live nodes share
one database and clients move between them.
"""

import asyncio
import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plauder.client import (
    Client,
    Event,
    MessageReceived,
    NotConnected,
    PresenceChanged,
    ReceiptReceived,
)
from tests.conftest import BACKEND, ServerProcess
from tests.integration.test_cli import lines, plauder
from tests.integration.test_messaging import next_of
from tests.services import Postgres, Redis, free_port


def closed_url() -> str:
    """A URL where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent() -> Iterator[str]:
    """A URL that accepts TCP connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def register_on(
    servers: list[str], server: ServerProcess, profiles: Path, number: str, **kw: Any
) -> Client:
    """Register a number through the SDK with a list of server URLs; the client is not started."""
    client = Client(profiles / number.lstrip("+"), number, shuffle_servers=False, **kw)
    await client.request_code(servers)
    await client.verify(server.code_for(number))
    return client


async def wait_for(check: Any, timeout: float = 20.0) -> None:
    """Poll a condition every 20 ms until it holds (or fail after `timeout` seconds)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_refused_first_url_is_skipped_at_once(
    server: ServerProcess, tmp_path: Path, numbers: Iterator[str]
) -> None:
    urls = [*(closed_url() for _ in range(6)), server.url]
    profiles = tmp_path / "profiles"
    alice = await register_on(urls, server, profiles, next(numbers), connect_timeout=3.0)
    bob = await register_on(urls, server, profiles, next(numbers), connect_timeout=3.0)
    assert alice.servers == urls and alice.last_server == server.url

    # forget the URL that worked: both go through the six refusals again, with no
    # back-off between the URLs of a round (doubling from 0.1 s would take over 3 s)
    began = time.monotonic()
    for client in (alice, bob):
        client.store.put_setting("last_server", urls[0])
        await client.start()
    assert time.monotonic() - began < 1.5
    assert alice.server == bob.server == server.url

    mid = await alice.send_text(bob.number, "über den zweiten Server")
    got = await next_of(bob, MessageReceived)
    assert (got.id, got.body) == (mid, "über den zweiten Server")
    assert (await next_of(alice, ReceiptReceived)).ids == (mid,)
    await alice.close()
    await bob.close()


async def test_silent_url_times_out_and_the_last_good_one_is_tried_first(
    server: ServerProcess, tmp_path: Path, numbers: Iterator[str], silent: str
) -> None:
    urls = [silent, server.url]
    profiles = tmp_path / "profiles"
    number = next(numbers)
    alice = await register_on(urls, server, profiles, number, server_timeout=0.5)
    await alice.close()

    # a new client on the profile starts with the URL that worked: were it to try
    # the silent one first, it would wait 5 s for it and miss the 2 s deadline
    again = Client(
        profiles / number.lstrip("+"),
        number,
        shuffle_servers=False,
        server_timeout=5.0,
        connect_timeout=2.0,
    )
    await again.start()
    assert again.server == server.url
    await again.close()

    # forget the last one: the silent URL is tried first and given up after 0.5 s
    fresh = Client(profiles / number.lstrip("+"), number, shuffle_servers=False, server_timeout=0.5)
    fresh.store.put_setting("last_server", silent)
    began = time.monotonic()
    await fresh.start()
    assert 0.4 < time.monotonic() - began < 3.0
    assert fresh.server == server.url and fresh.last_server == server.url
    await fresh.close()


class Recorder:
    """Every event a client emits, in order, collected by a task of its own."""

    def __init__(self, client: Client) -> None:
        self.events: list[Event] = []
        self._task = asyncio.get_running_loop().create_task(self._collect(client))

    async def _collect(self, client: Client) -> None:
        async for event in client.events():
            self.events.append(event)

    def messages(self) -> list[str]:
        """The ids of the messages received so far."""
        return [e.id for e in self.events if isinstance(e, MessageReceived)]

    def receipts(self, status: str = "delivered") -> list[str]:
        """The message ids in the receipts of a status received so far, in arrival order."""
        return [
            mid
            for e in self.events
            if isinstance(e, ReceiptReceived) and e.status == status
            for mid in e.ids
        ]

    def presence(self) -> list[tuple[bool, int | None]]:
        """The presence changes seen so far: online, last seen."""
        return [(e.online, e.last_seen) for e in self.events if isinstance(e, PresenceChanged)]

    def stop(self) -> None:
        """Stop collecting."""
        self._task.cancel()


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_node_lost_then_back_on_the_other_url_delivers_everything_once(
    server: ServerProcess, tmp_path: Path, numbers: Iterator[str], how: str
) -> None:
    """kill -9 (died mid-session) or SIGTERM (going away, 1001), then the other URL."""
    other_port = free_port()
    urls = [server.url, f"http://localhost:{other_port}"]
    profiles = tmp_path / "profiles"
    alice = await register_on(urls, server, profiles, next(numbers))
    bob = await register_on(urls, server, profiles, next(numbers))
    await alice.start()
    await bob.start()
    assert alice.server == bob.server == urls[0]
    seen_by_alice, seen_by_bob = Recorder(alice), Recorder(bob)
    await alice.watch_presence([bob.number])

    before = await alice.send_text(bob.number, "vorher")
    await wait_for(lambda: seen_by_bob.messages() == [before])
    await wait_for(lambda: seen_by_alice.receipts() == [before])

    await asyncio.to_thread(server.kill if how == "kill" else server.stop)
    await wait_for(lambda: alice.server is None and bob.server is None)
    sending = asyncio.get_running_loop().create_task(
        alice.send_text(bob.number, "während der Server fehlt", timeout=30.0)
    )
    await asyncio.sleep(0.5)  # the send waits in the outbox; the link retries
    assert not sending.done()

    server.port = other_port
    await asyncio.to_thread(server.start)  # the same data, now behind the other URL only
    during = await sending
    await wait_for(lambda: alice.server == urls[1] and bob.server == urls[1])
    assert alice.last_server == bob.last_server == urls[1]
    after = await alice.send_text(bob.number, "nachher")
    await wait_for(lambda: seen_by_bob.messages() == [before, during, after])
    await wait_for(lambda: len(seen_by_alice.receipts()) >= 3)

    # nothing came twice: no event repeated, every message once in the history
    await alice.wait_idle(20.0)
    await bob.wait_idle(20.0)
    await asyncio.sleep(0.3)  # anything repeated would arrive now
    assert seen_by_bob.messages() == [before, during, after]
    assert sorted(seen_by_alice.receipts()) == sorted([before, during, after])  # in any order
    assert seen_by_alice.messages() == [] and seen_by_bob.receipts() == []
    assert not any(
        isinstance(e, ReceiptReceived) and e.status != "delivered" for e in seen_by_alice.events
    )
    assert [e.id for e in bob.history(alice.number)] == [before, during, after]
    assert [e.status for e in alice.history(bob.number)] == ["delivered"] * 3

    # the presence watch moved along: online once (not again after the failover), then gone
    online = [state[0] for state in seen_by_alice.presence()]
    assert online[0] is True and online[-1] is True
    assert all(a != b for a, b in itertools.pairwise(online))
    await bob.close()
    if how == "stop" or BACKEND == "sqlite":
        # (a killed node's online counts in Redis outlive it by the node TTL, so a
        # cluster cannot tell at once that bob's last device left)
        await wait_for(lambda: seen_by_alice.presence()[-1][0] is False)
    seen_by_alice.stop()
    seen_by_bob.stop()
    await alice.close()


async def test_all_urls_down_raises_not_connected_then_recovers(
    server: ServerProcess, tmp_path: Path, numbers: Iterator[str]
) -> None:
    urls = [closed_url(), server.url]
    alice = await register_on(urls, server, tmp_path / "profiles", next(numbers))
    server.kill()
    with pytest.raises(NotConnected):
        await alice.start(wait=False)
        await alice.wait_connected(1.0)
    server.start()
    await alice.wait_connected(20.0)
    assert alice.server == server.url
    await alice.close()


def test_cli_stores_shows_and_changes_several_servers(
    server: ServerProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "profiles"
    a, b = "+4915100000001", "+4915100000002"
    dead = closed_url()
    other = f"http://localhost:{server.port}"
    for number in (a, b):
        args = ["register", "--server", f"{dead},{server.url}", "--server", f"{other}/"]
        out = plauder(cfg, "-a", number, *args).stdout
        assert f"plauder -a {number} verify" in out
        plauder(cfg, "-a", number, "verify", server.code_for(number))

    shown = lines(plauder(cfg, "--json", "-a", a, "servers").stdout)[0]
    assert shown["servers"] == [dead, server.url, other]
    assert shown["last"] in (server.url, other)
    text = plauder(cfg, "-a", a, "servers").stdout.splitlines()
    assert sorted(line.split()[0] for line in text) == sorted([dead, server.url, other])
    assert sum("(used last)" in line for line in text) == 1
    who = lines(plauder(cfg, "-a", a, "whoami", "--json").stdout)[0]
    assert who["servers"] == [dead, server.url, other]

    # change the list: only the dead URL and the second address are left
    plauder(cfg, "-a", a, "servers", "remove", server.url)
    changed = lines(plauder(cfg, "-a", a, "servers", "--json").stdout)[0]
    assert changed["servers"] == [dead, other]
    sent = lines(plauder(cfg, "--json", "-a", a, "send", "-m", "Hallo", b).stdout)
    assert sent[0]["type"] == "sent"
    got = lines(plauder(cfg, "--json", "-a", b, "receive").stdout)
    assert [(m["sender"], m["body"]) for m in got if m["type"] == "message"] == [(a, "Hallo")]
    assert lines(plauder(cfg, "-a", a, "servers", "--json").stdout)[0]["last"] == other

    assert lines(plauder(cfg, "-a", a, "--json", "servers", "set", server.url).stdout)[0][
        "servers"
    ] == [server.url]
    added = lines(plauder(cfg, "-a", a, "--json", "servers", "add", f"{other},{dead}").stdout)
    assert added[0]["servers"] == [server.url, other, dead]

    for bad in (["set", "ftp://x.example"], ["remove", server.url, other, dead]):
        refused = plauder(cfg, "-a", a, "servers", *bad, check=False)
        assert refused.returncode == 1 and "plauder:" in refused.stderr
    assert len(lines(plauder(cfg, "-a", a, "servers", "--json").stdout)[0]["servers"]) == 3
    unknown = plauder(cfg, "-a", "+4915100000009", "servers", check=False)
    assert unknown.returncode == 1 and "register first" in unknown.stderr


@pytest.mark.skipif(BACKEND != "postgres", reason="two live nodes need PostgreSQL and Redis")
async def test_two_nodes_on_one_database_clients_move_at_once(
    server_factory: Any,
    postgres: Postgres,
    redis_server: Redis,
    tmp_path: Path,
    numbers: Iterator[str],
) -> None:
    """Node a killed: clients are on b at once and get everything; b drained: back on a."""
    database = postgres.create_database()
    secret = tmp_path / "server.key"
    secret.write_bytes(bytes(range(32)))  # the cluster's code secret, the same on every node
    secret.chmod(0o600)
    shared = {
        "database": database,
        "redis": redis_server.url,
        "redis_namespace": database.rsplit("/", 1)[1],
        "secret_file": str(secret),
    }
    a: ServerProcess = server_factory("a", node_id="a", **shared)
    b: ServerProcess = server_factory("b", node_id="b", **shared)
    urls = [a.url, b.url]
    profiles = tmp_path / "profiles"
    alice = await register_on(urls, a, profiles, next(numbers))
    bob = await register_on(urls, a, profiles, next(numbers))
    await alice.start()
    await bob.start()
    assert alice.server == bob.server == a.url
    seen_by_alice, seen_by_bob = Recorder(alice), Recorder(bob)

    sent = [await alice.send_text(bob.number, f"auf a {i}") for i in range(5)]
    await bob.close()  # offline: what follows waits in the shared database
    sent += [await alice.send_text(bob.number, f"für später {i}") for i in range(5)]

    began = time.monotonic()
    await asyncio.to_thread(a.kill)
    await wait_for(lambda: alice.server == b.url)
    assert time.monotonic() - began < 3.0  # the next URL at once, no back-off
    sent += [await alice.send_text(bob.number, f"über b {i}") for i in range(5)]

    bob = Client(profiles / bob.number.lstrip("+"), bob.number, shuffle_servers=False)
    seen_by_bob.stop()
    seen_by_bob = Recorder(bob)
    await bob.start()  # a was the last that worked: refused, then b
    assert bob.server == b.url and bob.last_server == b.url
    await wait_for(lambda: len(seen_by_bob.messages()) >= 10)
    await bob.wait_idle(20.0)
    assert [e.id for e in bob.history(alice.number, limit=100)] == sent  # all, once, in order

    # a comes back; b is drained (SIGTERM: going away) and both move to a at once
    await asyncio.to_thread(a.start)
    draining = asyncio.get_running_loop().create_task(asyncio.to_thread(b.stop))
    await wait_for(lambda: alice.server == a.url and bob.server == a.url, timeout=10.0)
    last = await alice.send_text(bob.number, "wieder auf a")
    await wait_for(lambda: last in seen_by_bob.messages())
    await draining
    await wait_for(lambda: len(seen_by_alice.receipts()) >= len(sent) + 1)

    await bob.wait_idle(20.0)
    await alice.wait_idle(20.0)
    await asyncio.sleep(0.3)  # anything repeated would arrive now
    assert [e.id for e in bob.history(alice.number, limit=100)] == [*sent, last]
    assert len(seen_by_bob.messages()) == len(set(seen_by_bob.messages()))
    assert sorted(seen_by_alice.receipts()) == sorted([*sent, last])
    seen_by_alice.stop()
    seen_by_bob.stop()
    await alice.close()
    await bob.close()
