"""A device's feed over a real store: every envelope reaches the socket once, in any commit order.

On PostgreSQL, and across nodes, envelope ids do not become visible in id
order: a transaction holding a lower id may commit after one holding a higher
id. These tests make that happen by hiding a stored row and bringing it back,
as a late commit would.
"""

import asyncio

from plauder.protocol import codec
from plauder.protocol.frames import DeviceKeys, Envelope, OutEnvelope
from plauder.server.delivery import DeviceFeed
from plauder.server.storage.base import QueuedEnvelope, Sender, Store
from plauder.server.storage.queries import Tx


class Socket:
    """What the feed writes to: the frames a client would receive."""

    def __init__(self) -> None:
        self.frames: list[object] = []

    async def send(self, data: bytes) -> bool:
        self.frames.append(codec.decode_server(data))
        return True

    def eids(self) -> list[int]:
        return [f.eid for f in self.frames if isinstance(f, Envelope)]


async def register(store: Store, number: str) -> Sender:
    keys = DeviceKeys(device_id=1, identity_key="ik", signing_key="sk", signature="sig")
    reg = await store.register(number, "key-" + number, keys, [], None, 0)
    return Sender(reg.account_id, number, reg.device_pk, reg.device_id)


async def send(store: Store, sender: Sender, to: Sender, body: bytes) -> int:
    env = OutEnvelope(to=to.number, device_id=to.device_id, type=1, body=body)
    stored = await store.store_message(sender, body.ljust(8, b"."), [env], 1)
    return stored.deliveries[0].eid


async def run(store: Store, fn: object) -> None:
    await store._query(fn)  # type: ignore[attr-defined]


def late_commit(device: Sender, row: QueuedEnvelope) -> tuple[object, object]:
    """Operations that hide a stored envelope and bring it back, as a late commit would."""

    async def hide(tx: Tx) -> None:
        await tx.execute("DELETE FROM envelopes WHERE id = ?", row.eid)

    async def commit_late(tx: Tx) -> None:
        await tx.execute(
            "INSERT INTO envelopes (id, device_pk, sender, sender_device, type, body, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            row.eid,
            device.device_pk,
            row.sender,
            row.sender_device,
            row.type,
            row.body,
            row.ts,
        )

    return hide, commit_late


async def settle(socket: Socket, count: int) -> None:
    async with asyncio.timeout(5):
        while len(socket.eids()) < count:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # and nothing more arrives


async def test_an_envelope_committed_late_is_pushed_to_a_live_feed(store: Store) -> None:
    alice, bob = await register(store, "+4915100000001"), await register(store, "+4915100000002")
    low = await send(store, alice, bob, b"first")
    high = await send(store, alice, bob, b"second")
    row = (await store.fetch_queued(bob.device_pk, low - 1, 1))[0]
    hide, commit_late = late_commit(bob, row)
    await run(store, hide)
    socket = Socket()
    feed = DeviceFeed(store, bob.device_pk, socket.send, lambda: True, window=10)
    feed.start()
    await settle(socket, 1)
    assert socket.eids() == [high]
    await run(store, commit_late)
    frame = Envelope(eid=low, sender=row.sender, sender_device=1, type=1, body=row.body, ts=1)
    await feed.offer(low, codec.encode(frame))
    await settle(socket, 2)
    assert sorted(socket.eids()) == [low, high]
    feed.close()


async def test_a_feed_catching_up_reads_again_below_a_late_offer(store: Store) -> None:
    alice, bob = await register(store, "+4915100000001"), await register(store, "+4915100000002")
    eids = [await send(store, alice, bob, f"msg {i}".encode()) for i in range(4)]
    late = eids[1]
    row = (await store.fetch_queued(bob.device_pk, late - 1, 1))[0]
    hide, commit_late = late_commit(bob, row)
    await run(store, hide)
    socket = Socket()
    # a window of 2: the feed fills it and stays in catch-up, past the hidden id
    feed = DeviceFeed(store, bob.device_pk, socket.send, lambda: True, window=2)
    feed.start()
    await settle(socket, 2)
    assert socket.eids() == [eids[0], eids[2]]
    await run(store, commit_late)
    await feed.offer(late, b"not pushed while the window is full")
    await store.ack(bob.device_pk, [eids[0], eids[2]])  # as the gateway does: store, then feed
    feed.acked([eids[0], eids[2]])
    await settle(socket, 4)
    assert socket.eids() == [eids[0], eids[2], late, eids[3]]
    feed.close()


async def test_resync_pushes_what_a_lost_offer_left_behind_exactly_once(store: Store) -> None:
    alice, bob = await register(store, "+4915100000001"), await register(store, "+4915100000002")
    socket = Socket()
    feed = DeviceFeed(store, bob.device_pk, socket.send, lambda: True, window=10)
    feed.start()
    async with asyncio.timeout(5):
        while not socket.frames:  # `drained`: the feed is live
            await asyncio.sleep(0.01)
    first = await send(store, alice, bob, b"offered")
    row = (await store.fetch_queued(bob.device_pk, 0, 1))[0]
    frame = Envelope(eid=first, sender=row.sender, sender_device=1, type=1, body=row.body, ts=1)
    await feed.offer(first, codec.encode(frame))
    lost = await send(store, alice, bob, b"offer lost on the way")  # never offered
    await settle(socket, 1)
    assert socket.eids() == [first]
    feed.resync()
    await settle(socket, 2)
    assert socket.eids() == [first, lost]  # the unacknowledged one is not pushed twice
    feed.close()


async def test_an_offer_arriving_after_its_ack_is_not_pushed_again(store: Store) -> None:
    alice, bob = await register(store, "+4915100000001"), await register(store, "+4915100000002")
    eid = await send(store, alice, bob, b"read by the pump first")
    socket = Socket()
    feed = DeviceFeed(store, bob.device_pk, socket.send, lambda: True, window=10)
    feed.start()  # the pump reads it before the sender's offer comes (another node's, say)
    await settle(socket, 1)
    await store.ack(bob.device_pk, [eid])
    feed.acked([eid])
    row_frame = socket.frames[0]
    await feed.offer(eid, codec.encode(row_frame))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert socket.eids() == [eid]
    feed.close()


async def test_a_read_older_than_an_ack_does_not_push_the_acked_envelope_again(
    store: Store,
) -> None:
    alice, bob = await register(store, "+4915100000001"), await register(store, "+4915100000002")
    eid = await send(store, alice, bob, b"acked while a read was on its way")
    socket = Socket()
    feed = DeviceFeed(store, bob.device_pk, socket.send, lambda: True, window=10)
    feed.start()
    await settle(socket, 1)
    feed.acked([eid])  # the read below sees the row as it was before the ack's commit
    feed.resync()
    await asyncio.sleep(0.2)
    assert socket.eids() == [eid]
    feed.close()


async def test_a_feed_reads_nothing_before_it_is_started(store: Store) -> None:
    """The router subscribes the device's channel before the gateway starts the feed.

    An offer (from a sender on the same node) or a resync during that wait must
    not read the queue early: an envelope committed after such a read, whose
    notice went out before the subscription, would never be offered.
    """
    alice, bob = await register(store, "+4915100000001"), await register(store, "+4915100000002")
    first = await send(store, alice, bob, b"offered while attaching")
    row = (await store.fetch_queued(bob.device_pk, 0, 1))[0]
    socket = Socket()
    feed = DeviceFeed(store, bob.device_pk, socket.send, lambda: True, window=10)
    frame = Envelope(eid=first, sender=row.sender, sender_device=1, type=1, body=row.body, ts=1)
    await feed.offer(first, codec.encode(frame))
    feed.resync()
    await asyncio.sleep(0.1)
    assert socket.frames == []  # nothing read, nothing pushed
    unheard = await send(store, alice, bob, b"its notice came before the subscription")
    feed.start()
    await settle(socket, 2)
    assert socket.eids() == [first, unheard]
    feed.close()
