"""Groups through a real server with the real SDK: messages, membership, receipts, names."""

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plauder.client import (
    Client,
    Group,
    GroupChanged,
    MessageReceived,
    ReceiptReceived,
    UntrustedDevices,
)
from plauder.crypto import AccountKey
from tests.conftest import ServerProcess, register
from tests.integration.test_messaging import next_of
from tests.integration.test_trust import inject_device

MakeClient = Callable[..., Any]


async def texts(client: Client, group: Group | str, count: int, timeout: float = 10.0) -> list[str]:
    """The bodies of the next `count` messages of a group, skipping other events."""
    gid = group if isinstance(group, str) else group.gid
    out: list[str] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            ev = await client.next_event()
            if isinstance(ev, MessageReceived) and ev.group == gid:
                out.append(ev.body)
    return out


async def test_four_members_talk_both_ways_with_names_and_receipts(
    make_client: MakeClient,
) -> None:
    alice, bob, carol, dave = [await make_client() for _ in range(4)]
    group = await alice.groups.create(
        "Familie", [bob.number, carol.number, dave.number], description="Abendessen"
    )
    assert group.role == "admin" and len(group.gid) == 32
    assert group.members == {
        alice.number: "admin",
        bob.number: "member",
        carol.number: "member",
        dave.number: "member",
    }

    mid = await group.send("Essen um 7?")
    for member in (bob, carol, dave):
        got = await next_of(member, MessageReceived)
        assert (got.group, got.group_name, got.sender, got.body, got.id) == (
            group.gid,
            "Familie",
            alice.number,
            "Essen um 7?",
            mid,
        )
        theirs = member.groups.get("Familie")
        assert (theirs.gid, theirs.description, theirs.role) == (group.gid, "Abendessen", "member")
        assert theirs.unread == 1

    # everyone answers; everyone reads everyone
    for member, text in ((bob, "ja"), (carol, "gern"), (dave, "später")):
        await member.groups.get(group.gid).send(text)
    assert sorted(await texts(alice, group, 3)) == ["gern", "ja", "später"]
    assert sorted(await texts(bob, group, 2)) == ["gern", "später"]

    # receipts: delivered to all, then read by k of n
    async with asyncio.timeout(10):
        while group.summary(mid) != "delivered to all":
            await asyncio.sleep(0.05)
    assert alice.groups.get("Familie").history()[-4].status == "delivered"
    assert await bob.groups.get(group.gid).mark_read()
    read = await next_of(alice, ReceiptReceived)
    while read.status != "read":
        read = await next_of(alice, ReceiptReceived)
    assert (read.group, read.sender, read.ids) == (group.gid, bob.number, (mid,))
    assert group.summary(mid) == "delivered to all, read by 1 of 3"
    assert group.receipts(mid)[bob.number] == "read"
    assert group.receipts(mid)[carol.number] == "delivered"

    # the name changes for everyone, encrypted
    await group.rename("Familie Koch")
    changed = await next_of(carol, GroupChanged)
    while changed.action != "renamed":
        changed = await next_of(carol, GroupChanged)
    assert (changed.name, changed.actor) == ("Familie Koch", alice.number)
    assert carol.groups.get(group.gid).name == "Familie Koch"
    lines = [e.body for e in carol.groups.get(group.gid).history() if e.sender == ""]
    assert f"{alice.number} renamed the group to “Familie Koch”" in lines


async def test_a_reinstalled_member_is_announced_and_a_slipped_in_device_refused(
    make_client: MakeClient, server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob, carol = [await make_client() for _ in range(3)]
    group = await alice.groups.create("Nachbarn", [bob.number, carol.number])
    await group.send("vorher")
    assert await texts(bob, group, 1) == ["vorher"]
    await bob.close()

    bob = await register(server, tmp_path / "new-phone", bob.number)  # new keys, same number
    await bob.start()
    await group.send("nachher")
    changed = await next_of(alice, GroupChanged)
    while changed.action != "safety_number":
        changed = await next_of(alice, GroupChanged)
    assert (changed.gid, changed.numbers) == (group.gid, (bob.number,))
    assert f"the safety number with {bob.number} changed" in changed.text
    assert await texts(carol, group, 2) == ["vorher", "nachher"]
    assert await texts(bob, group, 1) == ["nachher"]  # the new phone reads from now on
    assert bob.groups.get("Nachbarn").members == group.members

    inject_device(server, carol.number, signed_by=AccountKey.generate())
    with pytest.raises(UntrustedDevices):
        await group.send("darf niemand lesen")
    assert [e.status for e in group.history() if e.outgoing][-1] == "failed"
    await bob.close()
