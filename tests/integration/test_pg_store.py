"""The PostgreSQL store's group commit: device lists read by one node, changed by another."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import DeviceKeys, OutEnvelope
from plauder.server.errors import ServiceError
from plauder.server.storage.base import Registration, Sender
from plauder.server.storage.postgres import PostgresStore
from tests.conftest import BACKEND
from tests.services import Postgres

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL's own store")

ALICE, BOB = "+4915100000001", "+4915100000002"
KEYS = DeviceKeys(device_id=1, identity_key="ik", signing_key="sk", signature="sig")


@pytest.fixture
async def nodes(postgres: Postgres) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two nodes of a cluster have."""
    url = postgres.create_database()
    a, b = PostgresStore(url), PostgresStore(url)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def register(store: PostgresStore, number: str) -> Registration:
    return await store.register(number, "account key", KEYS, [], None, 1)


def sender(number: str, reg: Registration) -> Sender:
    return Sender(reg.account_id, number, reg.device_pk, reg.device_id)


def to(number: str, device_id: int, body: bytes = b"x") -> OutEnvelope:
    return OutEnvelope(to=number, device_id=device_id, type=1, body=body)


async def bob_known_to(store: PostgresStore) -> tuple[Sender, Registration]:
    """Alice and Bob registered, and one message from Alice to Bob stored through `store`."""
    alice = sender(ALICE, await register(store, ALICE))
    bob = await register(store, BOB)
    first = await store.store_message(alice, b"cmid-0001", [to(BOB, bob.device_id)], 1)
    assert [d.device_pk for d in first.deliveries] == [bob.device_pk]
    return alice, bob


async def test_a_recipient_registered_again_on_another_node_gets_the_next_send(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    alice, _ = await bob_known_to(a)
    new = await register(b, BOB)  # bob's phone replaced: node a has not seen it
    stored = await a.store_message(alice, b"cmid-0002", [to(BOB, new.device_id)], 2)
    assert [d.device_pk for d in stored.deliveries] == [new.device_pk]


async def test_a_send_to_devices_removed_on_another_node_is_refused(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    alice, old = await bob_known_to(a)
    new = await register(b, BOB)
    with pytest.raises(ServiceError) as refused:  # node a's list says device 1 is right
        await a.store_message(alice, b"cmid-0002", [to(BOB, old.device_id)], 2)
    assert refused.value.code == ErrorCode.MISMATCHED_DEVICES
    assert await a.fetch_queued(new.device_pk, 0, 10) == []


async def test_one_commit_with_a_repeated_send_and_a_foreign_ack(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = nodes
    alice, bob_reg = await bob_known_to(a)
    (first,) = await a.fetch_queued(bob_reg.device_pk, 0, 10)
    eid = first.eid

    twice = [a.store_message(alice, b"cmid-0002", [to(BOB, 1, b"y")], 7) for _ in range(2)]
    acks = [a.ack(alice.device_pk, [eid]), a.ack(bob_reg.device_pk, [eid, eid])]
    *sends, foreign, own = await asyncio.gather(*twice, *acks)  # queued for one commit
    assert sorted(s.duplicate for s in sends) == [False, True]
    assert {s.ts for s in sends} == {7}
    assert (foreign, own) == (0, 1)  # alice may not delete bob's envelope; bob did
    queued = await a.fetch_queued(bob_reg.device_pk, 0, 10)
    assert [q.body for q in queued] == [b"y"]
