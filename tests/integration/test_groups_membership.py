"""Group membership with its cryptographic guarantees, links, refusals and catching up."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from plauder.client import (
    Client,
    DecryptionError,
    GroupChanged,
    GroupSettings,
    MessageReceived,
    ServerError,
)
from plauder.clock import ManualClock
from plauder.protocol.frames import Envelope, GetGroup
from plauder.protocol.groups import GROUP_MESSAGE, decode_body
from tests.conftest import ServerProcess
from tests.integration.test_groups import texts
from tests.integration.test_messaging import next_of

MakeClient = Callable[..., Any]


def last_body(server: ServerProcess, sender: str) -> tuple[bytes, int]:
    """The newest group message body a number sent, and its device, from the server's database."""
    rows = server.sql(
        "SELECT body, sender_device FROM group_messages WHERE sender = ? ORDER BY id DESC LIMIT 1",
        sender,
    )
    body, device = rows[0]
    assert isinstance(body, bytes) and isinstance(device, int)
    return body, device


def feed(client: Client, gid: str, sender: str, device: int, body: bytes) -> None:
    """Hand the client an envelope as a malicious server could, outside the group."""
    client._link._on_push(  # what the connection does with every frame the server pushes
        Envelope(
            eid=0,
            sender=sender,
            sender_device=device,
            type=GROUP_MESSAGE,
            body=body,
            ts=1,
            group=bytes.fromhex(gid),
        )
    )


async def changes(client: Client, action: str, timeout: float = 10.0) -> GroupChanged:
    """The next GroupChanged event with this action."""
    async with asyncio.timeout(timeout):
        while True:
            ev = await next_of(client, GroupChanged)
            if ev.action == action:
                return ev


async def test_removed_member_reads_nothing_after_and_new_member_nothing_before(
    make_client: MakeClient, server: ServerProcess
) -> None:
    alice, bob, carol, dave = [await make_client() for _ in range(4)]
    group = await alice.groups.create("Verein", [bob.number, carol.number])
    await group.send("vorher")
    assert await texts(carol, group, 1) == ["vorher"]
    before, device = last_body(server, alice.number)

    await group.remove(carol.number)
    assert set(group.members) == {alice.number, bob.number}
    removed = await changes(carol, "removed")
    assert (removed.actor, removed.numbers) == (alice.number, (carol.number,))
    assert carol.groups.get(group.gid).role == ""

    await group.send("nachher")
    assert await texts(bob, group, 2) == ["vorher", "nachher"]
    after, _ = last_body(server, alice.number)
    assert decode_body(after).session_id != decode_body(before).session_id  # rotated

    # a malicious server hands carol the message sent after her removal: no key for it
    feed(carol, group.gid, alice.number, device, after)
    async with asyncio.timeout(10):
        while carol._book.groups.count_waiting() == 0:
            await asyncio.sleep(0.02)
    assert [e.body for e in carol.groups.get(group.gid).history() if e.sender] == ["vorher"]

    # dave joins later and is handed the message from before he joined: it does not open
    await group.add(dave.number)
    await group.send("willkommen")
    assert await texts(dave, group, 1) == ["willkommen"]
    old_in_this_session, _ = last_body(server, alice.number)
    assert decode_body(old_in_this_session).session_id == decode_body(after).session_id
    feed(dave, group.gid, alice.number, device, after)
    refused = await next_of(dave, DecryptionError)
    assert refused.sender == alice.number
    assert [e.body for e in dave.groups.get(group.gid).history() if e.sender] == ["willkommen"]


async def test_invite_link_join_approval_and_revoke(make_client: MakeClient) -> None:
    alice, bob, erin, frank = [await make_client() for _ in range(4)]
    group = await alice.groups.create("Chor", [bob.number])
    link = await group.invite_link()
    assert link.startswith("plauder://join/")

    joined = await erin.groups.join(link)
    assert joined is not None and joined.gid == group.gid and joined.role == "member"
    event = await changes(alice, "joined")
    assert event.numbers == (erin.number,)
    # the admin's device tells the newcomer the name at once, before anyone writes
    async with asyncio.timeout(10):
        while erin.groups.get(group.gid).name != "Chor":
            await asyncio.sleep(0.05)
    await group.send("hallo Erin")
    assert await texts(erin, group, 1) == ["hallo Erin"]

    await group.set_settings(GroupSettings(approval=True))
    assert await frank.groups.join(link) is None  # waits for an admin
    asked = await changes(alice, "requested")
    assert asked.numbers == (frank.number,)
    assert group.requests == (frank.number,)
    await group.approve(frank.number)
    assert frank.number in group.members
    await group.send("hallo Frank")
    assert await texts(frank, group, 1) == ["hallo Frank"]

    await group.revoke_link()
    stranger = await make_client()
    with pytest.raises(ServerError) as refused:
        await stranger.groups.join(link)
    assert refused.value.code == "invalid_link"


async def test_the_link_names_the_group_while_every_member_is_offline(
    make_client: MakeClient, server: ServerProcess
) -> None:
    alice, bob, erin, frank = [await make_client() for _ in range(4)]
    group = await alice.groups.create("Bergwacht", [bob.number])
    await group.describe("Einsätze und Dienstplan")
    link = await group.invite_link()
    token, _, key = link.partition("#")
    assert key  # the card's key rides in the link, after the "#"
    await alice.close()
    await bob.close()  # nobody is online to welcome the newcomer

    joined = await erin.groups.join(link)
    assert joined is not None
    assert (joined.name, joined.description) == ("Bergwacht", "Einsätze und Dienstplan")
    # the server keeps the card but can read neither the name nor the key
    for table, column in (("groups", "invite_card"), ("envelopes", "body")):
        for (value,) in server.sql(f"SELECT {column} FROM {table}"):
            assert b"Bergwacht" not in bytes(value or b"")
    assert key not in server.log_text() and token.rsplit("/", 1)[1] not in server.log_text()

    # the same link without its key still joins; the name then waits for a member
    nameless = await frank.groups.join(token)
    assert nameless is not None and nameless.name == ""


async def test_a_member_back_by_link_learns_the_new_name_from_any_editor(
    make_client: MakeClient,
) -> None:
    alice, bob, carol = [await make_client() for _ in range(3)]
    group = await alice.groups.create("Verein", [bob.number, carol.number])
    await group.send("hallo")
    assert await texts(carol, group, 1) == ["hallo"]
    link = await group.invite_link()
    await group.remove(carol.number)
    await group.promote(bob.number)
    await changes(bob, "promoted")
    with pytest.raises(ServerError):  # carol's device has not heard of her removal
        await carol.groups.get(group.gid).send("bin ich noch drin?")
    mine = [e for e in carol.groups.get(group.gid).history() if e.outgoing]
    assert carol.groups.get(group.gid).summary(mine[-1].id) == "failed"

    await bob.groups.get(group.gid).rename("Neu")
    await alice.close()  # the admin whose device welcomes newcomers is away
    back = await carol.groups.join(link)
    assert back is not None and back.name == "Verein"  # all it knew, from before
    await bob.groups.get(group.gid).send("willkommen zurück")
    assert await texts(carol, group, 1) == ["willkommen zurück"]
    assert back.name == "Neu"  # from bob's key share
    lines = [e.body for e in back.history() if not e.sender]
    assert lines[-1] == "the group is named “Neu”", lines


async def test_members_are_refused_what_only_admins_may(make_client: MakeClient) -> None:
    alice, bob, carol = [await make_client() for _ in range(3)]
    outsider = await make_client()
    group = await alice.groups.create("Vorstand", [bob.number])
    await group.send("nur für den Vorstand")
    await texts(bob, group, 1)
    theirs = bob.groups.get("Vorstand")

    for attempt in (
        theirs.add(carol.number),
        theirs.remove(alice.number),
        theirs.promote(bob.number),
        theirs.invite_link(),
        theirs.rename("Gekapert"),
    ):
        with pytest.raises(ServerError) as refused:
            await attempt
        assert refused.value.code == "not_allowed"
    assert theirs.name == "Vorstand" and alice.groups.get(group.gid).name == "Vorstand"

    await group.set_settings(GroupSettings(send="admins"))
    with pytest.raises(ServerError) as refused:
        await theirs.send("darf ich?")
    assert refused.value.code == "not_allowed"
    assert [e.status for e in theirs.history() if e.outgoing] == ["failed"]

    with pytest.raises(ServerError) as refused:
        await outsider._link.request(GetGroup(id=1, gid=bytes.fromhex(group.gid)))
    assert refused.value.code == "unknown_group"

    # a promoted member may; the last admin leaving hands the group on
    await group.promote(bob.number)
    await theirs.send("jetzt darf ich")
    assert await texts(alice, group, 1) == ["jetzt darf ich"]
    await theirs.leave()
    assert theirs.role == ""
    await group.leave()
    assert not [g for g in alice.groups.list() if g.gid == group.gid]


async def test_offline_member_catches_up_through_three_rotations(
    make_client: MakeClient, server: ServerProcess
) -> None:
    alice, bob = await make_client(), await make_client()
    carol = await make_client(start=False)
    others = [await make_client() for _ in range(3)]
    group = await alice.groups.create(
        "Runde", [bob.number, carol.number] + [o.number for o in others]
    )
    sessions = set()
    sent = []
    for i, leaving in enumerate(others):
        text = f"Runde {i}"
        await group.send(text)
        sent.append(text)
        sessions.add(decode_body(last_body(server, alice.number)[0]).session_id)
        await group.remove(leaving.number)
    await group.send("Ende")
    sent.append("Ende")
    sessions.add(decode_body(last_body(server, alice.number)[0]).session_id)
    assert len(sessions) == 4  # a new session after each removal
    await bob.groups.get(group.gid).send("von Bob")

    await carol.start()
    await carol.wait_idle()
    mine = carol.groups.get("Runde")
    history = mine.history()
    assert [e.body for e in history if e.sender == alice.number] == sent
    assert [e.body for e in history if e.sender == bob.number] == ["von Bob"]
    removed = [e.body for e in history if e.sender == "" and "removed" in e.body]
    assert len(removed) == 3
    assert set(mine.members) == {alice.number, bob.number, carol.number}
    assert mine.unread == 5
    events = carol.pending_events()
    assert not [e for e in events if isinstance(e, DecryptionError)]
    assert len([e for e in events if isinstance(e, MessageReceived)]) == 5
    assert carol._book.groups.count_waiting() == 0


async def test_a_new_session_after_a_week_and_after_100_messages(
    make_client: MakeClient, server: ServerProcess
) -> None:
    clock = ManualClock(now_ms=int(time.time() * 1000))
    alice = await make_client(clock=clock)
    bob = await make_client()
    group = await alice.groups.create("Takt", [bob.number])  # the name: message 0

    def session() -> str:
        return decode_body(last_body(server, alice.number)[0]).session_id

    first = session()
    clock.advance(7 * 24 * 3600)
    await group.send("eine Woche später")
    week = session()
    for i in range(99):  # messages 1 to 99 of the new session
        await group.send(f"{i}")
    assert session() == week
    await group.send("die hundertste")
    assert len({first, week, session()}) == 3
    bodies = await texts(bob, group, 101, timeout=30)
    assert bodies[0] == "eine Woche später" and bodies[-1] == "die hundertste"


async def test_a_message_that_comes_before_its_key_waits_and_is_shown_once(
    make_client: MakeClient, server: ServerProcess
) -> None:
    alice = await make_client()
    bob = await make_client(start=False)
    group = await alice.groups.create("Reihenfolge", [bob.number])
    mid = await group.send("erst der Schlüssel, dann ich")
    body, device = last_body(server, alice.number)

    feed(bob, group.gid, alice.number, device, body)  # ahead of the queue with its key
    await bob.start()
    await bob.wait_idle()
    got = [e for e in bob.pending_events() if isinstance(e, MessageReceived)]
    assert [(e.id, e.body) for e in got] == [(mid, "erst der Schlüssel, dann ich")]
    assert bob._book.groups.count_waiting() == 0
    assert [e.body for e in bob.groups.get(group.gid).history() if e.sender] == [
        "erst der Schlüssel, dann ich"
    ]
