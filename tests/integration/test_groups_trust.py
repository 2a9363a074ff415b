"""What a malicious server (or member) could slip into a group, refused by the SDK itself."""

import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from plauder.client import Client, DecryptionError, GroupSettings
from plauder.client.errors import UnknownMembers
from plauder.client.group_sender import key_document
from plauder.client.group_store import GroupRecord
from plauder.protocol.content import Content, GroupKey, GroupState, Text, encode_content
from plauder.protocol.frames import Envelope
from plauder.protocol.groups import GROUP_MESSAGE, GROUP_STATE, GroupBody, encode_body
from tests.conftest import ServerProcess
from tests.integration.test_groups import texts
from tests.integration.test_groups_membership import changes
from tests.integration.test_messaging import next_of

MakeClient = Callable[..., Any]


async def forge(client: Client, gid: str, content: Content) -> bytes:
    """A group message body the client's own device encrypts, past its SDK's checks."""
    keys = client._inbox._group_keys
    async with client._keys.lock:
        ciphertext = keys.encrypt(gid, encode_content(content), client.clock.now_ms())
        with client.store.transaction():
            keys.persist()
    return encode_body(
        GroupBody(session_id=ciphertext.session_id, ciphertext=ciphertext.ciphertext)
    )


def push(receiver: Client, gid: str, sender: Client, body: bytes, kind: int) -> None:
    """Hand the receiver a group envelope from the sender's real device, as a server could."""
    receiver._link._on_push(
        Envelope(
            eid=0,
            sender=sender.number,
            sender_device=sender._profile.device_id,
            type=kind,
            body=body,
            ts=int(time.time() * 1000),
            group=bytes.fromhex(gid),
        )
    )


def chat(client: Client, gid: str) -> list[str]:
    """What the client shows in the group's chat: messages and system lines."""
    return [e.body for e in client.groups.get(gid).history()]


def text(body: str) -> Text:
    return Text(id=secrets.token_hex(16), ts=int(time.time() * 1000), body=body)


async def test_a_removed_members_message_is_refused(make_client: MakeClient) -> None:
    alice, bob, carol = [await make_client() for _ in range(3)]
    group = await alice.groups.create("Verein", [bob.number, carol.number])
    await carol.groups.get(group.gid).send("noch dabei")
    assert await texts(bob, group, 1) == ["noch dabei"]  # bob holds carol's session
    await group.remove(carol.number)
    await changes(bob, "removed")

    # carol's device still encrypts with that session; a server hands bob the result
    push(bob, group.gid, carol, await forge(carol, group.gid, text("bin wieder da")), GROUP_MESSAGE)
    refused = await next_of(bob, DecryptionError)
    assert refused.sender == carol.number
    assert f"{carol.number} is not a member of the group" in refused.reason
    assert "bin wieder da" not in chat(bob, group.gid)


async def test_members_without_the_right_may_neither_rename_nor_send(
    make_client: MakeClient,
) -> None:
    alice, bob, carol = [await make_client() for _ in range(3)]
    group = await alice.groups.create("Vorstand", [bob.number, carol.number])  # edit: admins
    await bob.groups.get(group.gid).send("hallo")
    assert await texts(carol, group, 1) == ["hallo"]

    later = int(time.time() * 1000) + 60_000
    state = GroupState(id=secrets.token_hex(16), ts=later, name="Gekapert", description="")
    push(carol, group.gid, bob, await forge(bob, group.gid, state), GROUP_STATE)
    refused = await next_of(carol, DecryptionError)
    assert "only admins may change the name or description" in refused.reason
    assert carol.groups.get(group.gid).name == "Vorstand"
    assert not [line for line in chat(carol, group.gid) if "Gekapert" in line]

    await group.set_settings(GroupSettings(send="admins"))
    await changes(carol, "settings")
    push(carol, group.gid, bob, await forge(bob, group.gid, text("trotzdem")), GROUP_MESSAGE)
    refused = await next_of(carol, DecryptionError)
    assert "only admins may send to the group" in refused.reason
    assert "trotzdem" not in chat(carol, group.gid)

    # the admin's text made into a state envelope is reported, not dropped in silence
    push(carol, group.gid, alice, await forge(alice, group.gid, text("getarnt")), GROUP_STATE)
    refused = await next_of(carol, DecryptionError)
    assert "a text document in an envelope of type 4" in refused.reason
    assert "getarnt" not in chat(carol, group.gid)

    await group.send("nur Admins")  # what the admin sends still arrives
    assert await texts(carol, group, 1) == ["nur Admins"]


async def share_from(stranger: Client, gid: str, name: str) -> GroupKey:
    """A signed session key of the stranger's own device that names a group."""
    keys = stranger._inbox._group_keys
    async with stranger._keys.lock:
        keys.start(gid, stranger.clock.now_ms())
        share = keys.key_share(gid)
    named = GroupRecord(gid=gid, name=name, state_ts=int(time.time() * 1000) + 60_000)
    return key_document(share, named)


async def send_olm(sender: Client, to: Client, content: Content) -> None:
    """An ordinary Olm message between two accounts, which any server passes on."""
    entry = await sender._outbox.queue(to.number, secrets.token_bytes(16), encode_content(content))
    await sender._outbox.await_sent(entry, 10)


async def test_a_strangers_key_share_neither_imports_nor_names(make_client: MakeClient) -> None:
    alice, bob, carol, mallory = [await make_client() for _ in range(4)]
    group = await alice.groups.create("Chor", [bob.number])
    await group.send("hallo")
    assert await texts(bob, group, 1) == ["hallo"]

    share = await share_from(mallory, group.gid, "Gekapert")
    await send_olm(mallory, bob, share)
    refused = await next_of(bob, DecryptionError)
    assert refused.sender == mallory.number
    assert f"group key refused: {mallory.number} is not a member" in refused.reason
    assert bob.groups.get(group.gid).name == "Chor"
    assert not bob._inbox._group_keys.has_inbound(share.sender_identity_key, share.session_id)

    # a share for a group bob does not know yet: its name goes once the members show mallory out
    other = await alice.groups.create("Zweite", [carol.number])
    await send_olm(mallory, bob, await share_from(mallory, other.gid, "Gekapert"))
    await bob.wait_idle()
    assert bob._book.record(other.gid).name == "Gekapert"  # kept aside: bob is in no such group
    assert not [g for g in bob.groups.list() if g.gid == other.gid]
    await other.add(bob.number)
    await other.send("willkommen")
    assert await texts(bob, other, 1) == ["willkommen"]
    assert bob.groups.get(other.gid).name == "Zweite"
    assert not [line for line in chat(bob, other.gid) if "Gekapert" in line]


def add_silently(server: ServerProcess, gid: str, number: str) -> None:
    """Do what a malicious server could: make an account a member, with no notice, same version."""
    ((group_id,),) = server.sql("SELECT id FROM groups WHERE gid = ?", bytes.fromhex(gid))
    ((account_id,),) = server.sql("SELECT id FROM accounts WHERE number = ?", number)
    server.sql(
        "INSERT INTO group_members (group_id, account_id, role, joined) VALUES (?, ?, 'member', ?)",
        group_id,
        account_id,
        int(time.time() * 1000),
    )


def queued_for(server: ServerProcess, number: str) -> int:
    """How many envelopes wait for the number's devices."""
    rows = server.sql(
        "SELECT count(*) FROM envelopes e JOIN devices d ON d.pk = e.device_pk "
        "JOIN accounts a ON a.id = d.account_id WHERE a.number = ?",
        number,
    )
    return int(str(rows[0][0]))


async def test_a_sender_refuses_an_account_the_server_slipped_in(
    make_client: MakeClient, server: ServerProcess
) -> None:
    alice, bob = await make_client(), await make_client()
    mallory = await make_client(start=False)
    group = await alice.groups.create("Familie", [bob.number])
    await group.send("vorher")
    assert await texts(bob, group, 1) == ["vorher"]

    add_silently(server, group.gid, mallory.number)
    await make_client()  # a registration makes the server list the group's devices afresh
    with pytest.raises(UnknownMembers) as refused:
        await group.send("geheim")
    assert refused.value.numbers == [mallory.number]
    assert [e.status for e in group.history() if e.outgoing][-1] == "failed"
    assert mallory.number not in group.members
    assert queued_for(server, mallory.number) == 0  # not even a key share

    # the same account with a version the server raised, still without a notice: it is a
    # member by the server's word now, and shows in the member list, though no line says so
    server.sql("UPDATE groups SET version = version + 1 WHERE gid = ?", bytes.fromhex(group.gid))
    await group.send("jetzt mit ihr")
    assert mallory.number in group.members
    assert not [line for line in chat(alice, group.gid) if "added" in line]


async def test_a_member_added_a_moment_ago_gets_the_message(make_client: MakeClient) -> None:
    alice, bob, dave = [await make_client() for _ in range(3)]
    group = await alice.groups.create("Runde", [bob.number])
    await group.send("hallo")
    assert await texts(bob, group, 1) == ["hallo"]
    await group.add(dave.number)
    await changes(bob, "added")

    # bob's device as if the `added` notice were still on its way
    book = bob._book.groups
    record = book.get(group.gid)
    assert record is not None
    members = {n: r for n, r in record.members.items() if n != dave.number}
    with bob.store.transaction():
        book.save(dataclasses.replace(record, members=members, version=record.version - 1))

    await bob.groups.get(group.gid).send("willkommen")
    assert await texts(dave, group, 1) == ["willkommen"]
    assert dave.number in bob.groups.get(group.gid).members


async def test_a_device_that_learns_the_group_late_still_shows_what_a_removed_member_sent(
    make_client: MakeClient,
) -> None:
    alice, carol = await make_client(), await make_client()
    bob = await make_client(start=False)
    group = await alice.groups.create("Stammtisch", [carol.number])
    await group.add(bob.number)
    await changes(carol, "added")
    await carol.groups.get(group.gid).send("bis bald")
    await group.remove(carol.number)

    # bob's first look at the group (get_group) no longer has carol, his queue still does
    await bob.start()
    await bob.wait_idle()
    assert "bis bald" in chat(bob, group.gid)
    assert not [e for e in bob.pending_events() if isinstance(e, DecryptionError)]
    assert bob._book.groups.count_waiting() == 0


async def test_a_strangers_message_ahead_of_the_notices_is_refused_once_they_arrive(
    make_client: MakeClient,
) -> None:
    alice, carol, dave, mallory = [await make_client() for _ in range(4)]
    bob = await make_client(start=False)
    group = await alice.groups.create("Stammtisch", [carol.number])
    await group.add(bob.number)
    await group.add(dave.number)  # bob's first view is one version ahead of his queue

    await share_from(mallory, group.gid, "")
    push(bob, group.gid, mallory, await forge(mallory, group.gid, text("hallo")), GROUP_MESSAGE)
    await bob.start()
    refused = await next_of(bob, DecryptionError)
    assert refused.sender == mallory.number
    assert f"{mallory.number} is not a member of the group" in refused.reason
    await group.send("willkommen")
    assert await texts(bob, group, 1) == ["willkommen"]
    assert "hallo" not in chat(bob, group.gid)
    assert bob._book.groups.count_waiting() == 0
