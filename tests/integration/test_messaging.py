"""Two users chat through a real server with the real SDK."""

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec

from plauder.client import Client, MessageReceived, ReceiptReceived, TypingChanged
from plauder.client.connection import next_request_id
from plauder.protocol.frames import Send

MakeClient = Callable[..., Any]


async def next_of(client: Client, kind: type, timeout: float = 10.0) -> Any:
    """The next event of a kind, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            ev = await client.next_event()
            if isinstance(ev, kind):
                return ev


async def test_both_directions_with_ticks(make_client: MakeClient) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()

    mid = await alice.send_text(bob.number, "Hallo Bob")
    assert alice.history(bob.number)[-1].status == "sent"  # single tick

    got = await next_of(bob, MessageReceived)
    assert (got.sender, got.body, got.id) == (alice.number, "Hallo Bob", mid)

    delivered = await next_of(alice, ReceiptReceived)
    assert (delivered.status, delivered.ids) == ("delivered", (mid,))
    assert alice.history(bob.number)[-1].status == "delivered"  # double tick

    assert await bob.mark_read(alice.number) == [mid]
    read = await next_of(alice, ReceiptReceived)
    assert (read.status, read.ids) == ("read", (mid,))
    assert alice.history(bob.number)[-1].status == "read"

    reply = await bob.send_text(alice.number, "Hallo Alice")
    back = await next_of(alice, MessageReceived)
    assert (back.body, back.id) == ("Hallo Alice", reply)
    assert [e.body for e in bob.history(alice.number)] == ["Hallo Bob", "Hallo Alice"]


async def test_offline_recipient_gets_queue_in_order(make_client: MakeClient) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client(start=False)

    sent = [await alice.send_text(bob.number, f"message {i}") for i in range(30)]

    await bob.start()
    await bob.wait_idle()
    received = [e.id for e in bob.history(alice.number)]
    assert received == sent


async def test_typing_is_delivered_live_and_never_queued(make_client: MakeClient) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    carol: Client = await make_client(start=False)

    await alice.send_typing(bob.number, True)
    ev = await next_of(bob, TypingChanged)
    assert (ev.sender, ev.active) == (alice.number, True)

    await alice.send_typing(carol.number, True)  # carol is offline
    await carol.start()
    await carol.wait_idle()
    assert not any(isinstance(e, TypingChanged) for e in carol.pending_events())


async def test_a_newer_kind_of_message_is_kept_as_a_placeholder(
    make_client: MakeClient,
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    poll = b'{"type":"poll","id":"c0ffee","ts":5,"question":"Pizza?","options":["ja","nein"]}'
    entry = await alice._queue(bob.number, b"\x02" * 16, poll)
    frame = msgspec.msgpack.decode(entry.frame, type=Send)
    await alice._request(msgspec.structs.replace(frame, id=next_request_id()))

    got = await next_of(bob, MessageReceived)
    assert got.id == "c0ffee" and "poll" in got.body and "update plauder" in got.body
    assert [e.id for e in bob.history(alice.number)] == ["c0ffee"]
    await bob.wait_idle()  # acked, and its delivered receipt went out like any message's
    assert bob.store.pending_receipts() == {}

    # and the session still works for what follows
    mid = await alice.send_text(bob.number, "und jetzt normal")
    assert (await next_of(bob, MessageReceived)).id == mid
