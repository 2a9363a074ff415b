"""The server's side of groups, spoken in raw frames: rights, limits, fan-out, durability.

The bodies are opaque bytes here: what the server must do with a group message
does not depend on its encryption (tests/integration/test_groups.py covers that
with the real SDK).
"""

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from plauder.crypto import AccountKey, Device
from plauder.crypto.invite import MAX_CARD_BYTES
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import (
    Ack,
    ClientFrame,
    DeviceRef,
    Envelope,
    Error,
    GetGroup,
    GroupAdd,
    GroupAnswer,
    GroupCreate,
    GroupDeviceList,
    GroupDevices,
    GroupInfo,
    GroupInvite,
    GroupJoin,
    GroupLeave,
    GroupLink,
    GroupList,
    GroupRemove,
    GroupSend,
    GroupSetRole,
    GroupSetSettings,
    GroupSettings,
    JoinRequested,
    ListGroups,
    Ok,
    Registered,
    RequestCode,
    Sent,
    ServerFrame,
)
from plauder.protocol.groups import GROUP_MESSAGE, GROUP_NOTICE, GROUP_STATE, decode_notice
from tests.conftest import ServerProcess
from tests.integration.test_bad_input import (
    Account,
    Wire,
    login,
    register_raw,
    rid,
    verify_frame,
)

ServerFactory = Callable[..., ServerProcess]
NUMBERS = [f"+49151000100{i:02d}" for i in range(8)]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for raw WebSockets."""
    async with aiohttp.ClientSession() as s:
        yield s


@dataclass
class Member:
    """A registered account with an authenticated receiving connection."""

    account: Account
    wire: Wire

    @property
    def number(self) -> str:
        """The member's number."""
        return self.account.number

    async def request(self, frame: ClientFrame) -> ServerFrame:
        """Send a request and return its answer."""
        return await self.wire.request(frame)

    async def ok(self, frame: ClientFrame) -> ServerFrame:
        """Send a request that must succeed; return its answer."""
        answer = await self.wire.request(frame)
        assert not isinstance(answer, Error), answer
        return answer

    async def envelope(self, timeout: float = 10.0) -> Envelope:
        """The next envelope pushed to this device, acknowledged."""
        env = await self.wire.next_of(Envelope, timeout)
        assert isinstance(await self.wire.request(Ack(id=rid(), eids=[env.eid])), Ok)
        return env

    async def notice(self) -> tuple[str, list[str], str]:
        """The next group notice: (action, numbers, actor)."""
        env = await self.envelope()
        assert env.type == GROUP_NOTICE, env
        notice = decode_notice(env.body)
        return notice.action, notice.numbers, notice.actor

    async def nothing(self, seconds: float = 0.5) -> None:
        """Assert that no envelope arrives for a while."""
        with pytest.raises(TimeoutError):
            await self.wire.next_of(Envelope, seconds)


async def members(
    session: aiohttp.ClientSession, server: ServerProcess, count: int
) -> list[Member]:
    """`count` registered accounts, each logged in."""
    out = []
    for number in NUMBERS[:count]:
        account = await register_raw(session, server, number)
        wire, _ = await login(session, server, account)
        out.append(Member(account, wire))
    return out


async def close_all(group: list[Member]) -> None:
    """Close every member's connection."""
    for m in group:
        await m.wire.close()


def new_gid() -> bytes:
    """A fresh group id."""
    return secrets.token_bytes(16)


async def digest(member: Member, gid: bytes) -> bytes:
    """The device digest the member's sends must carry."""
    answer = await member.ok(GroupDevices(id=rid(), gid=gid))
    assert isinstance(answer, GroupDeviceList)
    return answer.digest


def group_send(gid: bytes, digest: bytes, body: bytes, kind: str = "message") -> GroupSend:
    """A group send with a fresh cmid."""
    return GroupSend(
        id=rid(),
        gid=gid,
        cmid=secrets.token_bytes(16),
        body=body,
        digest=digest,
        kind=kind,  # type: ignore[arg-type]
    )


async def create(admin: Member, others: list[Member], **settings: object) -> bytes:
    """A new group of the admin and the others; everyone's `created` notice is taken."""
    gid = new_gid()
    frame = GroupCreate(
        id=rid(),
        gid=gid,
        members=[m.number for m in others],
        settings=GroupSettings(**settings),  # type: ignore[arg-type]
    )
    info = await admin.ok(frame)
    assert isinstance(info, GroupInfo)
    for m in [admin, *others]:
        assert (await m.notice())[0] == "created"
    return gid


# --- fan-out ------------------------------------------------------------------------------


async def test_one_body_stored_and_queued_for_every_other_member_device(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, c = await members(session, server, 3)
    gid = await create(a, [b, c])
    info = await a.ok(GetGroup(id=rid(), gid=gid))
    assert isinstance(info, GroupInfo)
    assert [(m.number, m.role) for m in info.members] == [
        (a.number, "admin"),
        (b.number, "member"),
        (c.number, "member"),
    ]
    body = secrets.token_bytes(300)
    sent = await a.ok(group_send(gid, await digest(a, gid), body))
    assert isinstance(sent, Sent) and not sent.duplicate

    for m in (b, c):
        env = await m.envelope()
        assert (env.type, env.group, env.body, env.sender) == (GROUP_MESSAGE, gid, body, a.number)
        assert env.sender_device == a.account.device_id
    await a.nothing()  # the sending device gets no copy

    # stored once; the envelopes only refer to it
    bodies = server.sql("SELECT body FROM group_messages")
    assert [bytes(r[0]) for r in bodies].count(body) == 1  # type: ignore[arg-type]
    assert server.sql("SELECT count(*) FROM envelopes WHERE length(body) > 0") == [(0,)]

    # B answers: the others, A included, get it
    sent = await b.ok(group_send(gid, await digest(b, gid), b"from b"))
    for m in (a, c):
        assert (await m.envelope()).body == b"from b"
    await close_all([a, b, c])


async def test_a_stale_device_list_stores_nothing(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, c = await members(session, server, 3)
    gid = await create(a, [b])
    before = await digest(a, gid)
    await a.ok(GroupAdd(id=rid(), gid=gid, numbers=[c.number]))
    answer = await a.request(group_send(gid, before, b"for a and b only"))
    assert isinstance(answer, Error) and answer.code == ErrorCode.GROUP_DEVICES_CHANGED
    assert server.sql(
        "SELECT count(*) FROM group_messages WHERE body = ?", b"for a and b only"
    ) == [(0,)]
    await a.ok(group_send(gid, await digest(a, gid), b"for everyone"))
    assert (await c.notice())[0] == "added"
    assert (await c.envelope()).body == b"for everyone"
    await close_all([a, b, c])


async def test_a_member_registering_again_changes_the_group_devices(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, c = await members(session, server, 3)
    gid = await create(a, [b, c])
    before = await digest(a, gid)
    await a.ok(group_send(gid, before, b"to the old device"))  # the server knows this list
    await b.wire.close()
    again = await register_raw(session, server, b.number)  # a new phone: a new device
    answer = await a.request(group_send(gid, before, b"stale"))
    assert isinstance(answer, Error) and answer.code == ErrorCode.GROUP_DEVICES_CHANGED
    await a.ok(group_send(gid, await digest(a, gid), b"to the new device"))
    wire, _ = await login(session, server, again)
    assert (await Member(again, wire).envelope()).body == b"to the new device"
    await close_all([a, c, Member(again, wire)])


async def test_a_repeated_send_is_stored_once(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b = await members(session, server, 2)
    gid = await create(a, [b])
    frame = group_send(gid, await digest(a, gid), b"once")
    first = await a.ok(frame)
    again = await a.ok(GroupSend(**{**_fields(frame), "id": rid()}))
    assert isinstance(first, Sent) and isinstance(again, Sent)
    assert again.duplicate and again.ts == first.ts
    assert (await b.envelope()).body == b"once"
    await b.nothing()
    await close_all([a, b])


def _fields(frame: GroupSend) -> dict[str, object]:
    return {f: getattr(frame, f) for f in frame.__struct_fields__}


# --- rights -------------------------------------------------------------------------------


async def test_members_who_are_not_admins_are_refused_with_their_codes(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, c, d = await members(session, server, 4)
    gid = await create(a, [b, c])

    async def code(member: Member, frame: ClientFrame) -> str:
        answer = await member.request(frame)
        assert isinstance(answer, Error), answer
        return answer.code

    refused = ErrorCode.NOT_ALLOWED
    assert await code(b, GroupAdd(id=rid(), gid=gid, numbers=[d.number])) == refused
    assert await code(b, GroupRemove(id=rid(), gid=gid, numbers=[c.number])) == refused
    assert await code(b, GroupSetRole(id=rid(), gid=gid, numbers=[b.number], role="admin")) == (
        refused
    )
    assert await code(b, GroupSetSettings(id=rid(), gid=gid, settings=GroupSettings())) == refused
    assert await code(b, GroupInvite(id=rid(), gid=gid)) == refused
    # the default lets members send but not edit the group's info
    assert await code(b, group_send(gid, await digest(b, gid), b"x", kind="state")) == refused

    # outsiders learn nothing about the group
    stranger = ErrorCode.UNKNOWN_GROUP
    assert await code(d, GetGroup(id=rid(), gid=gid)) == stranger
    assert await code(d, GroupDevices(id=rid(), gid=gid)) == stranger
    assert await code(d, group_send(gid, b"\0" * 32, b"x")) == stranger
    assert await code(d, GroupLeave(id=rid(), gid=gid)) == stranger

    # admins get precise errors too
    assert await code(a, GroupRemove(id=rid(), gid=gid, numbers=[d.number])) == (
        ErrorCode.NOT_A_MEMBER
    )
    assert await code(a, GroupAdd(id=rid(), gid=gid, numbers=["+4915199999999"])) == (
        ErrorCode.UNKNOWN_ACCOUNT
    )
    assert await code(a, GroupSetRole(id=rid(), gid=gid, numbers=[a.number], role="member")) == (
        refused  # the only admin
    )
    assert await code(d, GroupCreate(id=rid(), gid=gid)) == ErrorCode.GROUP_EXISTS
    assert await code(a, GetGroup(id=rid(), gid=b"short")) == ErrorCode.INVALID_REQUEST

    # with "admins only", members may not send; promoted, they may
    await a.ok(GroupSetSettings(id=rid(), gid=gid, settings=GroupSettings(send="admins")))
    assert await code(b, group_send(gid, await digest(b, gid), b"x")) == refused
    await a.ok(GroupSetRole(id=rid(), gid=gid, numbers=[b.number], role="admin"))
    assert isinstance(await b.ok(group_send(gid, await digest(b, gid), b"x", "state")), Sent)

    # nothing refused reached anyone: c saw the two changes and b's state message only
    assert (await c.notice())[0] == "settings"
    assert (await c.notice())[:2] == ("promoted", [b.number])
    assert (await c.envelope()).type == GROUP_STATE
    await c.nothing()
    await close_all([a, b, c, d])


async def test_a_removed_member_hears_of_it_and_then_nothing(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, c = await members(session, server, 3)
    gid = await create(a, [b, c])
    await a.ok(GroupRemove(id=rid(), gid=gid, numbers=[c.number]))
    assert await c.notice() == ("removed", [c.number], a.number)
    assert await b.notice() == ("removed", [c.number], a.number)
    await a.ok(group_send(gid, await digest(a, gid), b"after"))
    assert (await b.envelope()).body == b"after"
    await c.nothing()
    answer = await c.request(GetGroup(id=rid(), gid=gid))
    assert isinstance(answer, Error) and answer.code == ErrorCode.UNKNOWN_GROUP
    listed = await c.ok(ListGroups(id=rid()))
    assert isinstance(listed, GroupList) and listed.groups == []
    await close_all([a, b, c])


async def test_the_last_admin_leaving_leaves_an_admin(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, c = await members(session, server, 3)
    gid = await create(a, [b, c])
    assert isinstance(await a.ok(GroupLeave(id=rid(), gid=gid)), Ok)
    assert await b.notice() == ("left", [a.number], a.number)
    assert await b.notice() == ("promoted", [b.number], a.number)
    info = await b.ok(GetGroup(id=rid(), gid=gid))
    assert isinstance(info, GroupInfo)
    assert [(m.number, m.role) for m in info.members] == [(b.number, "admin"), (c.number, "member")]

    # when the last member leaves, the group is gone and its id free again
    await b.ok(GroupLeave(id=rid(), gid=gid))
    await c.ok(GroupLeave(id=rid(), gid=gid))
    assert server.sql("SELECT count(*) FROM groups WHERE gid = ?", gid) == [(0,)]
    assert isinstance(await a.ok(GroupCreate(id=rid(), gid=gid)), GroupInfo)
    await close_all([a, b, c])


async def test_changes_at_the_same_time_all_succeed_in_some_order(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, *others = await members(session, server, 8)
    gid = await create(a, [b])
    await a.ok(GroupSetRole(id=rid(), gid=gid, numbers=[b.number], role="admin"))
    # two admins, each sending three changes without waiting for answers
    frames = [
        (admin, GroupAdd(id=rid(), gid=gid, numbers=[m.number]))
        for admin, m in zip([a, b] * 3, others, strict=True)
    ]
    for admin, frame in frames:
        await admin.wire.send(frame)
    answers = [await admin.wire.answer(frame.id) for admin, frame in frames]
    assert all(isinstance(x, GroupInfo) for x in answers), answers
    info = await a.ok(GetGroup(id=rid(), gid=gid))
    assert isinstance(info, GroupInfo) and len(info.members) == 8
    assert info.version == 2 + len(frames)  # created, promoted, then one per add
    await close_all([a, b, *others])


# --- invite links -------------------------------------------------------------------------


async def test_invite_links_join_revoke_and_approval(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, e, f = await members(session, server, 4)
    gid = await create(a, [b])
    too_big = await a.request(GroupInvite(id=rid(), gid=gid, card=bytes(MAX_CARD_BYTES + 1)))
    assert isinstance(too_big, Error) and too_big.code == ErrorCode.INVALID_REQUEST
    card = b"sealed name and description"  # opaque to the server: kept and handed to joiners
    link = await a.ok(GroupInvite(id=rid(), gid=gid, card=card))
    assert isinstance(link, GroupLink) and len(link.token) >= 16
    joined = await e.ok(GroupJoin(id=rid(), token=link.token))
    assert isinstance(joined, GroupInfo) and e.number in [m.number for m in joined.members]
    assert joined.card == card
    for m in (a, b, e):
        assert await m.notice() == ("joined", [e.number], e.number)

    # a new link replaces the old one; a revoked one works no more
    newer = await a.ok(GroupInvite(id=rid(), gid=gid))
    assert isinstance(newer, GroupLink) and newer.token != link.token
    answer = await f.request(GroupJoin(id=rid(), token=link.token))
    assert isinstance(answer, Error) and answer.code == ErrorCode.INVALID_LINK
    await a.ok(GroupInvite(id=rid(), gid=gid, revoke=True))
    answer = await f.request(GroupJoin(id=rid(), token=newer.token))
    assert isinstance(answer, Error) and answer.code == ErrorCode.INVALID_LINK

    # with approval on, a join waits for an admin; only admins hear of the request
    await a.ok(GroupSetSettings(id=rid(), gid=gid, settings=GroupSettings(approval=True)))
    link = await a.ok(GroupInvite(id=rid(), gid=gid))
    assert isinstance(link, GroupLink)
    waiting = await f.ok(GroupJoin(id=rid(), token=link.token))
    assert isinstance(waiting, JoinRequested) and waiting.gid == gid and waiting.card == b""
    for m in (a, b, e):
        assert (await m.notice())[0] == "settings"
    assert await a.notice() == ("requested", [f.number], f.number)
    info = await a.ok(GetGroup(id=rid(), gid=gid))
    assert isinstance(info, GroupInfo) and info.requests == [f.number] and info.link
    seen_by_member = await b.ok(GetGroup(id=rid(), gid=gid))
    assert isinstance(seen_by_member, GroupInfo) and seen_by_member.requests == []
    answer = await f.request(GetGroup(id=rid(), gid=gid))
    assert isinstance(answer, Error)  # not a member yet
    approved = await a.ok(GroupAnswer(id=rid(), gid=gid, numbers=[f.number], approve=True))
    assert isinstance(approved, GroupInfo) and f.number in [m.number for m in approved.members]
    assert await f.notice() == ("added", [f.number], a.number)
    # b's next notice is `added`: b never heard of the request
    assert await b.notice() == ("added", [f.number], a.number)
    await close_all([a, b, e, f])


# --- limits -------------------------------------------------------------------------------


async def register_many(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: list[str]
) -> None:
    """Register many accounts quickly: codes asked for on one connection, read at once."""
    wire = await Wire.open(session, server)
    await wire.hello()
    ids = []
    for number in numbers:
        frame = RequestCode(id=rid(), number=number)
        ids.append(frame.id)
        await wire.send(frame)
    for i in ids:
        assert isinstance(await wire.answer(i), Ok)
    await asyncio.sleep(0.2)
    codes = dict(re.findall(r"verification code for (\+\d+): (\d{6})", server.log_text()))
    frames = []
    for number in numbers:
        frame = verify_frame(number, codes[number], AccountKey.generate(), Device.create(), 1)
        frames.append(frame)
        await wire.send(frame)
    for frame in frames:
        assert isinstance(await wire.answer(frame.id, timeout=60), Registered)
    await wire.close()


async def test_a_group_takes_1024_members_and_refuses_the_1025th(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    many = 1100
    server = server_factory(
        code_requests_per_connection=many,
        code_attempts=many,
        requests_per_second=100_000,
        request_burst=100_000,
    )
    numbers = [f"+4915120{i:06d}" for i in range(1025)]
    await register_many(session, server, numbers)
    (a,) = await members(session, server, 1)
    gid = new_gid()
    too_many = await a.request(GroupCreate(id=rid(), gid=gid, members=numbers))
    assert isinstance(too_many, Error) and too_many.code == ErrorCode.GROUP_FULL
    info = await a.ok(GroupCreate(id=rid(), gid=gid, members=numbers[:1023]))
    assert isinstance(info, GroupInfo) and len(info.members) == 1024
    full = await a.request(GroupAdd(id=rid(), gid=gid, numbers=[numbers[1024]]))
    assert isinstance(full, Error) and full.code == ErrorCode.GROUP_FULL
    # a message to 1,024 members is stored once and queued 1,023 times
    await a.envelope()  # the `created` notice
    sent = await a.ok(group_send(gid, await digest(a, gid), b"to all"))
    assert isinstance(sent, Sent)
    assert server.sql(
        "SELECT count(*) FROM envelopes e JOIN group_messages g ON g.id = e.message_id "
        "WHERE g.body = ?",
        b"to all",
    ) == [(1023,)]
    await a.wire.close()


async def test_groups_per_account_are_limited(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = server_factory(max_groups_per_account=2)
    a, b = await members(session, server, 2)
    await create(a, [b])
    await create(a, [])
    answer = await a.request(GroupCreate(id=rid(), gid=new_gid()))
    assert isinstance(answer, Error) and answer.code == ErrorCode.TOO_MANY_GROUPS
    gid = await create(b, [])
    answer = await b.request(GroupAdd(id=rid(), gid=gid, numbers=[a.number]))
    assert isinstance(answer, Error) and answer.code == ErrorCode.TOO_MANY_GROUPS
    assert a.number in answer.message
    await close_all([a, b])


async def test_pre_key_claims_for_members_are_limited(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = server_factory(group_claims_per_minute=2)
    a, b, c = await members(session, server, 3)
    gid = await create(a, [b, c])
    refs = [DeviceRef(number=m.number, device_id=m.account.device_id) for m in (b, c)]
    listing = await a.ok(GroupDevices(id=rid(), gid=gid, claim=refs))
    assert isinstance(listing, GroupDeviceList)
    claimed = [d.prekey for m in listing.members for d in m.devices if d.prekey is not None]
    assert len(claimed) == 2
    answer = await a.request(GroupDevices(id=rid(), gid=gid, claim=refs[:1]))
    assert isinstance(answer, Error) and answer.code == ErrorCode.RATE_LIMITED
    await close_all([a, b, c])


# --- durability ---------------------------------------------------------------------------


async def test_a_group_message_survives_kill_9_after_sent(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    a, b, c = await members(session, server, 3)
    gid = await create(a, [b, c])
    await b.wire.close()
    sent = await a.ok(group_send(gid, await digest(a, gid), b"kept"))
    assert isinstance(sent, Sent)
    server.kill()
    await a.wire.close()
    await c.wire.close()
    server.start()
    wire, _ = await login(session, server, b.account)
    back = Member(b.account, wire)
    env = await back.envelope()
    assert (env.type, env.group, env.body) == (GROUP_MESSAGE, gid, b"kept")
    await wire.close()
