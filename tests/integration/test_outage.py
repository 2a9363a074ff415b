"""PostgreSQL unavailable: sends fail clearly, never `sent` without a commit; recovery by itself."""

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from plauder.client import Client, MessageReceived
from plauder.client.errors import NotConnected
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import Envelope, Error, Sent
from tests.conftest import BACKEND, ServerProcess, register
from tests.integration.test_bad_input import envelope, login, register_raw, send_frame
from tests.integration.test_messaging import next_of
from tests.services import Postgres

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="the database is a separate server")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_sends_fail_clearly_while_postgres_is_down_and_work_after(
    server: ServerProcess,
    postgres: Postgres,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    numbers: Callable[[], str],
) -> None:
    alice = await register_raw(session, server, next(numbers))  # type: ignore[call-overload]
    bob = await register_raw(session, server, next(numbers))  # type: ignore[call-overload]
    wire, _ = await login(session, server, alice)
    before = send_frame(envelope(bob, b"before the outage"))
    assert isinstance(await wire.request(before), Sent)

    postgres.stop()
    try:
        during = send_frame(envelope(bob, b"during the outage"))
        answer = await wire.request(during)
        assert isinstance(answer, Error), answer  # never `sent` without a commit
        assert answer.code == ErrorCode.UNAVAILABLE.value
        health = await session.get(server.url + "/health")
        assert health.status == 200  # the node itself serves on; the database is shared
    finally:
        postgres.start()

    async with asyncio.timeout(20):  # the node reconnects by itself
        while True:
            again = await wire.request(send_frame(envelope(bob, b"after the outage")))
            if isinstance(again, Sent):
                break
            assert isinstance(again, Error) and again.code == ErrorCode.UNAVAILABLE.value
            await asyncio.sleep(0.2)
    retried = await wire.request(during)  # the refused send, sent again, is stored once
    assert isinstance(retried, Sent) and not retried.duplicate
    bob_wire, _ = await login(session, server, bob)
    bodies = [(await bob_wire.next_of(Envelope)).body for _ in range(3)]
    assert sorted(bodies) == [b"after the outage", b"before the outage", b"during the outage"]
    await wire.close()
    await bob_wire.close()


async def test_sdk_message_sent_during_the_outage_arrives_once_after_it(
    server: ServerProcess, postgres: Postgres, tmp_path: Path, numbers: Callable[[], str]
) -> None:
    profiles = tmp_path / "profiles"
    alice: Client = await register(server, profiles, next(numbers))  # type: ignore[call-overload]
    bob: Client = await register(server, profiles, next(numbers))  # type: ignore[call-overload]
    await alice.start()
    await bob.start()
    await alice.send_text(bob.number, "Hallo vorher")
    assert (await next_of(bob, MessageReceived)).body == "Hallo vorher"

    postgres.stop()
    try:
        with pytest.raises(NotConnected, match="stays queued"):
            await alice.send_text(bob.number, "Hallo waehrenddessen", timeout=2)
        assert alice.history(bob.number)[-1].status == "pending"
    finally:
        postgres.start()

    got = await next_of(bob, MessageReceived, timeout=30)  # the SDK retries by itself
    assert got.body == "Hallo waehrenddessen"
    await alice.send_text(bob.number, "Hallo danach")
    assert (await next_of(bob, MessageReceived)).body == "Hallo danach"
    texts = [e.body for e in bob.history(alice.number)]
    assert texts == ["Hallo vorher", "Hallo waehrenddessen", "Hallo danach"]
    await alice.close()
    await bob.close()
