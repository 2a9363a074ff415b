"""Group operations over a `Tx`, written once for SQLite and PostgreSQL.

Each operation checks everything first and only then writes, so a refused
request changes nothing (SQLite's group commit relies on that). On
PostgreSQL, an operation that changes a group locks its row FOR UPDATE
before reading anything, and a `group_send` locks it FOR SHARE: changes run
one at a time, sends run together, and no message is queued for a member
removed by a change committed before it.

A group message is stored once in `group_messages`; every member device gets
an envelope with an empty body that refers to it (`message_id`).
"""

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import (
    DeviceKeys,
    DeviceRef,
    GroupMember,
    GroupNotice,
    GroupSettings,
    GroupSummary,
    SignedKey,
)
from plauder.protocol.groups import GROUP_MESSAGE, GROUP_NOTICE, GROUP_STATE, encode_notice
from plauder.protocol.groups import device_digest as digest_of
from plauder.server.errors import ServiceError
from plauder.server.storage import queries
from plauder.server.storage.base import Sender
from plauder.server.storage.queries import Tx

Role = Literal["admin", "member"]
Lock = Literal["share", "update"]
DEVICE_SETS = 256  # groups whose device lists a single writer keeps
SHARE: Lock = "share"  # sends: many at once, none while a change runs
UPDATE: Lock = "update"  # changes: one at a time
ADMIN: Role = "admin"
MEMBER: Role = "member"


@dataclass(frozen=True, slots=True)
class GroupLimits:
    """The limits group operations enforce."""

    max_members: int
    max_groups: int  # groups an account may belong to


@dataclass(frozen=True, slots=True)
class Fanout:
    """A stored group envelope and the (device pk, envelope id) it is queued under."""

    gid: bytes
    sender: str
    sender_device: int
    type: int
    body: bytes
    ts: int
    targets: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group as its members see it; requests and link only for admins."""

    gid: bytes
    version: int
    members: list[GroupMember]
    settings: GroupSettings
    requests: list[str] = field(default_factory=list)
    link: bool = False


@dataclass(frozen=True, slots=True)
class GroupResult:
    """The outcome of a change: the group now (None for the one who left) and what to route."""

    view: GroupView | None
    fanouts: list[Fanout]


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of a `group_send`: when it was stored, whether before, what to route."""

    ts: int
    duplicate: bool
    fanouts: list[Fanout]


@dataclass(frozen=True, slots=True)
class MemberDeviceRows:
    """A member's account key and its devices, each with a claimed pre-key if asked for."""

    number: str
    account_key: str
    devices: list[tuple[DeviceKeys, SignedKey | None]]


@dataclass(frozen=True, slots=True)
class DeviceListing:
    """What `group_devices` answers, and the pools it drew pre-keys from."""

    version: int
    digest: bytes
    members: list[MemberDeviceRows]
    drawn: list[tuple[int, int]]


class DeviceSet:
    """A group's member devices at one version, and the digest each sender must match."""

    __slots__ = ("_digests", "_pairs", "pks")

    def __init__(self, rows: list[tuple[int, str, int, int]]) -> None:
        self.pks = [pk for pk, _, _, _ in rows]
        self._pairs = {pk: (number, device_id) for pk, number, device_id, _ in rows}
        self._digests: dict[int, bytes] = {}

    def digest_for(self, sender_pk: int) -> bytes:
        """The digest of every device but the sender's."""
        found = self._digests.get(sender_pk)
        if found is None:
            pairs = (pair for pk, pair in self._pairs.items() if pk != sender_pk)
            found = self._digests[sender_pk] = digest_of(pairs)
        return found


@dataclass(frozen=True, slots=True)
class _Group:
    id: int
    version: int
    settings: GroupSettings
    has_link: bool


# --- reading -----------------------------------------------------------------------------


async def group_view(tx: Tx, account_id: int, gid: bytes) -> GroupView:
    """The group as the account sees it; unknown_group if it is not a member."""
    group = await _group(tx, gid)
    role = await _role(tx, group.id, account_id)
    if role is None:
        raise ServiceError(ErrorCode.UNKNOWN_GROUP, "no such group, or you are not a member")
    return await _view(tx, gid, group, admin=role == ADMIN)


async def list_groups(tx: Tx, account_id: int) -> list[GroupSummary]:
    """The groups of an account."""
    rows = await tx.fetchall(
        "SELECT g.gid, g.version, m.role, "
        "(SELECT count(*) FROM group_members c WHERE c.group_id = g.id) "
        "FROM group_members m JOIN groups g ON g.id = m.group_id "
        "WHERE m.account_id = ? ORDER BY g.id",
        account_id,
    )
    return [
        GroupSummary(gid=bytes(r[0]), version=int(r[1]), role=_as_role(r[2]), members=int(r[3]))
        for r in rows
    ]


async def member_devices(
    tx: Tx, actor: Sender, gid: bytes, claim: list[DeviceRef]
) -> DeviceListing:
    """Every member's devices and the digest a send must carry; claims the listed pre-keys."""
    group = await _group(tx, gid)
    await _require_member(tx, group.id, actor.account_id)
    rows = await tx.fetchall(
        "SELECT a.number, a.account_key, d.pk, d.device_id, d.identity_key, d.signing_key, "
        "d.signature FROM group_members m JOIN accounts a ON a.id = m.account_id "
        "JOIN devices d ON d.account_id = a.id WHERE m.group_id = ? "
        "ORDER BY m.joined, a.id, d.device_id",
        group.id,
    )
    wanted = {(c.number, c.device_id) for c in claim}
    members: dict[str, MemberDeviceRows] = {}
    drawn: list[tuple[int, int]] = []
    pairs: list[tuple[str, int]] = []
    for number, account_key, pk, device_id, ik, sk, sig in rows:
        keys = DeviceKeys(device_id=int(device_id), identity_key=ik, signing_key=sk, signature=sig)
        prekey = None
        if (number, int(device_id)) in wanted and int(pk) != actor.device_pk:
            prekey = await queries.claim_prekey(tx, int(pk))
            drawn.append((int(pk), await queries.count_one_time_keys(tx, int(pk))))
        entry = members.setdefault(number, MemberDeviceRows(number, str(account_key), []))
        entry.devices.append((keys, prekey))
        if int(pk) != actor.device_pk:
            pairs.append((str(number), int(device_id)))
    return DeviceListing(group.version, digest_of(pairs), list(members.values()), drawn)


# --- messages ----------------------------------------------------------------------------


async def send(
    tx: Tx,
    actor: Sender,
    gid: bytes,
    cmid: bytes,
    body: bytes,
    digest: bytes,
    kind: Literal["message", "state"],
    now_ms: int,
) -> SendResult:
    """Store a group message once and queue it for every member device but the sender's."""
    group = await _group(tx, gid, lock=SHARE)
    role = await _require_member(tx, group.id, actor.account_id)
    if kind == "message" and group.settings.send == "admins" and role != ADMIN:
        raise ServiceError(ErrorCode.NOT_ALLOWED, "only admins may send to this group")
    if kind == "state" and group.settings.edit == "admins" and role != ADMIN:
        raise ServiceError(ErrorCode.NOT_ALLOWED, "only admins may edit this group's info")
    first = await queries.first_ts(tx, actor.device_pk, cmid)
    if first is not None:  # routed again: the node that stored it may have died before routing
        return SendResult(first, True, await _still_queued(tx, gid, actor, first))
    devices = await _device_set(tx, group)
    if digest != devices.digest_for(actor.device_pk):
        raise ServiceError(
            ErrorCode.GROUP_DEVICES_CHANGED,
            "the group's devices have changed: fetch them again and share your key",
        )
    await tx.execute(
        "INSERT INTO sent_messages (device_pk, cmid, ts) VALUES (?, ?, ?)",
        actor.device_pk,
        cmid,
        now_ms,
    )
    kind_type = GROUP_MESSAGE if kind == "message" else GROUP_STATE
    pks = [pk for pk in devices.pks if pk != actor.device_pk]
    fanout = await _fan_out(tx, gid, actor, kind_type, body, now_ms, pks)
    return SendResult(now_ms, False, [fanout])


# --- changes -----------------------------------------------------------------------------


async def create(
    tx: Tx,
    actor: Sender,
    gid: bytes,
    numbers: list[str],
    settings: GroupSettings,
    limits: GroupLimits,
    now_ms: int,
) -> GroupResult:
    """Create a group with the actor as admin and these accounts as members."""
    row = await tx.fetchone("SELECT id, creator FROM groups WHERE gid = ?", gid)
    if row is not None:
        if int(row[1]) != actor.account_id:
            raise ServiceError(ErrorCode.GROUP_EXISTS, "this group id is taken")
        return GroupResult(await group_view(tx, actor.account_id, gid), [])  # a repeat
    others = [n for n in dict.fromkeys(numbers) if n != actor.number]
    if len(others) + 1 > limits.max_members:
        raise ServiceError(
            ErrorCode.GROUP_FULL, f"a group may have at most {limits.max_members} members"
        )
    accounts = await _accounts(tx, others)
    await _check_group_counts(tx, [actor.account_id, *accounts.values()], limits)
    row = await tx.fetchone(
        "INSERT INTO groups (gid, creator, send_policy, edit_policy, approval, created) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        gid,
        actor.account_id,
        settings.send,
        settings.edit,
        settings.approval,
        now_ms,
    )
    assert row is not None
    group_id = int(row[0])
    await _insert_members(tx, group_id, [(actor.account_id, ADMIN)], now_ms)
    await _insert_members(tx, group_id, [(a, MEMBER) for a in accounts.values()], now_ms)
    notice = GroupNotice(
        action="created", actor=actor.number, numbers=others, version=1, settings=settings
    )
    fanout = await _notify(tx, group_id, gid, actor, notice, now_ms)
    return GroupResult(await group_view(tx, actor.account_id, gid), [fanout])


async def add(
    tx: Tx, actor: Sender, gid: bytes, numbers: list[str], limits: GroupLimits, now_ms: int
) -> GroupResult:
    """Admins: add accounts; those already members are left alone."""
    group = await _as_admin(tx, actor, gid)
    accounts = await _accounts(tx, list(dict.fromkeys(numbers)))
    current = await _members(tx, group.id)
    new = {n: a for n, a in accounts.items() if a not in current}
    if not new:
        return GroupResult(await _view(tx, gid, group, admin=True), [])
    if len(current) + len(new) > limits.max_members:
        raise ServiceError(
            ErrorCode.GROUP_FULL, f"a group may have at most {limits.max_members} members"
        )
    await _check_group_counts(tx, list(new.values()), limits)
    return await _change(tx, group, gid, actor, "added", list(new), now_ms, add=list(new.values()))


async def remove(tx: Tx, actor: Sender, gid: bytes, numbers: list[str], now_ms: int) -> GroupResult:
    """Admins: remove members (they receive the notice of their removal, then nothing)."""
    group = await _as_admin(tx, actor, gid)
    if actor.number in numbers:
        raise ServiceError(ErrorCode.INVALID_REQUEST, "to remove yourself, leave the group")
    accounts, _ = await _named_members(tx, group.id, numbers)
    return await _change(
        tx, group, gid, actor, "removed", list(accounts), now_ms, drop=list(accounts.values())
    )


async def set_role(
    tx: Tx, actor: Sender, gid: bytes, numbers: list[str], role: Role, now_ms: int
) -> GroupResult:
    """Admins: promote members or demote admins; a group always keeps an admin."""
    group = await _as_admin(tx, actor, gid)
    accounts, current = await _named_members(tx, group.id, numbers)
    changed = {n: a for n, a in accounts.items() if current[a] != role}
    if not changed:
        return GroupResult(await _view(tx, gid, group, admin=True), [])
    if role == MEMBER and all(a in changed.values() for a, r in current.items() if r == ADMIN):
        raise ServiceError(ErrorCode.NOT_ALLOWED, "a group needs at least one admin")
    action: Literal["promoted", "demoted"] = "promoted" if role == ADMIN else "demoted"
    return await _change(
        tx, group, gid, actor, action, list(changed), now_ms, roles=(list(changed.values()), role)
    )


async def leave(tx: Tx, actor: Sender, gid: bytes, now_ms: int) -> GroupResult:
    """Leave a group; if no admin would be left, the longest member becomes one."""
    group = await _group(tx, gid, lock=UPDATE)
    await _require_member(tx, group.id, actor.account_id)
    left = await _change(
        tx, group, gid, actor, "left", [actor.number], now_ms, drop=[actor.account_id]
    )
    heir = await tx.fetchone(
        "SELECT m.account_id, a.number FROM group_members m JOIN accounts a "
        "ON a.id = m.account_id WHERE m.group_id = ? AND NOT EXISTS (SELECT 1 FROM "
        "group_members x WHERE x.group_id = m.group_id AND x.role = 'admin') "
        "ORDER BY m.joined, m.account_id LIMIT 1",
        group.id,
    )
    if heir is None:
        # nobody is left: the group goes, and its gid with it
        await tx.execute(
            "DELETE FROM groups WHERE id = ? AND NOT EXISTS "
            "(SELECT 1 FROM group_members WHERE group_id = ?)",
            group.id,
            group.id,
        )
        return GroupResult(None, left.fanouts)
    promoted = await _change(
        tx,
        await _group(tx, gid),
        gid,
        actor,
        "promoted",
        [str(heir[1])],
        now_ms,
        roles=([int(heir[0])], ADMIN),
    )
    return GroupResult(None, left.fanouts + promoted.fanouts)


async def set_settings(
    tx: Tx, actor: Sender, gid: bytes, settings: GroupSettings, now_ms: int
) -> GroupResult:
    """Admins: change who may send and edit, and whether link joins need approval."""
    group = await _as_admin(tx, actor, gid)
    if settings == group.settings:
        return GroupResult(await _view(tx, gid, group, admin=True), [])
    await tx.execute(
        "UPDATE groups SET send_policy = ?, edit_policy = ?, approval = ? WHERE id = ?",
        settings.send,
        settings.edit,
        settings.approval,
        group.id,
    )
    return await _change(tx, group, gid, actor, "settings", [], now_ms, settings=settings)


async def set_invite(
    tx: Tx, actor: Sender, gid: bytes, token: str | None, card: bytes = b""
) -> None:
    """Admins: replace the group's invite link token and its sealed card (None: no link)."""
    group = await _as_admin(tx, actor, gid)
    digest = None if token is None else _token_digest(token)
    await tx.execute(
        "UPDATE groups SET invite = ?, invite_card = ? WHERE id = ?",
        digest,
        None if token is None else card,
        group.id,
    )


async def join(
    tx: Tx, actor: Sender, token: str, limits: GroupLimits, now_ms: int
) -> tuple[bytes, bytes, GroupResult]:
    """Join by invite token: the gid, the link's sealed card, and the result (no view
    while the request waits for an admin)."""
    row = await tx.fetchone(
        "SELECT gid, invite_card FROM groups WHERE invite = ?", _token_digest(token)
    )
    if row is None:
        raise ServiceError(ErrorCode.INVALID_LINK, "this invite link is not valid (any more)")
    gid, card = bytes(row[0]), bytes(row[1] or b"")
    group = await _group(tx, gid, lock=UPDATE)
    current = await _members(tx, group.id)
    if actor.account_id in current:
        return gid, card, GroupResult(await group_view(tx, actor.account_id, gid), [])
    if len(current) + 1 > limits.max_members:
        raise ServiceError(ErrorCode.GROUP_FULL, "the group is full")
    await _check_group_counts(tx, [actor.account_id], limits)
    if not group.settings.approval:
        result = await _change(
            tx, group, gid, actor, "joined", [actor.number], now_ms, add=[actor.account_id]
        )
        return gid, card, result
    asked = await tx.execute(
        "INSERT INTO group_requests (group_id, account_id, ts) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        group.id,
        actor.account_id,
        now_ms,
    )
    if not asked:
        return gid, card, GroupResult(None, [])  # asked before: the admins know
    admins = [a for a, r in current.items() if r == ADMIN]
    result = await _change(
        tx, group, gid, actor, "requested", [actor.number], now_ms, audience=admins
    )
    return gid, card, GroupResult(None, result.fanouts)


async def answer(
    tx: Tx,
    actor: Sender,
    gid: bytes,
    numbers: list[str],
    approve: bool,
    limits: GroupLimits,
    now_ms: int,
) -> GroupResult:
    """Admins: approve (add) or deny join requests."""
    group = await _as_admin(tx, actor, gid)
    accounts = await _accounts(tx, list(dict.fromkeys(numbers)))
    waiting = {
        int(r[0])
        for r in await tx.fetchall(
            "SELECT account_id FROM group_requests WHERE group_id = ?", group.id
        )
    }
    missing = [n for n, a in accounts.items() if a not in waiting]
    if missing:
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"no join request from {', '.join(missing)}")
    if approve:
        current = await _members(tx, group.id)
        if len(current) + len(accounts) > limits.max_members:
            raise ServiceError(ErrorCode.GROUP_FULL, "the group is full")
        await _check_group_counts(tx, list(accounts.values()), limits)
    await tx.executemany(
        "DELETE FROM group_requests WHERE group_id = ? AND account_id = ?",
        [(group.id, a) for a in accounts.values()],
    )
    if not approve:
        return GroupResult(await _view(tx, gid, group, admin=True), [])
    return await _change(
        tx, group, gid, actor, "added", list(accounts), now_ms, add=list(accounts.values())
    )


# --- the parts ---------------------------------------------------------------------------


async def _change(
    tx: Tx,
    group: _Group,
    gid: bytes,
    actor: Sender,
    action: Literal[
        "added", "removed", "left", "joined", "promoted", "demoted", "settings", "requested"
    ],
    numbers: list[str],
    now_ms: int,
    *,
    add: list[int] | None = None,
    drop: list[int] | None = None,
    roles: tuple[list[int], Role] | None = None,
    settings: GroupSettings | None = None,
    audience: list[int] | None = None,
) -> GroupResult:
    """Apply a change, bump the version, and queue its notice to everyone concerned.

    A join request changes nothing members see, so it keeps the version.
    """
    version = group.version if action == "requested" else group.version + 1
    if version != group.version:
        await tx.execute("UPDATE groups SET version = ? WHERE id = ?", version, group.id)
    if add:
        await _insert_members(tx, group.id, [(a, MEMBER) for a in add], now_ms)
        await tx.executemany(
            "DELETE FROM group_requests WHERE group_id = ? AND account_id = ?",
            [(group.id, a) for a in add],
        )
    if roles:
        await tx.executemany(
            "UPDATE group_members SET role = ? WHERE group_id = ? AND account_id = ?",
            [(roles[1], group.id, a) for a in roles[0]],
        )
    notice = GroupNotice(
        action=action, actor=actor.number, numbers=numbers, version=version, settings=settings
    )
    # the removed hear of their removal: their devices are read before they go
    fanout = await _notify(tx, group.id, gid, actor, notice, now_ms, audience)
    if drop:
        await tx.executemany(
            "DELETE FROM group_members WHERE group_id = ? AND account_id = ?",
            [(group.id, a) for a in drop],
        )
    role = await _role(tx, group.id, actor.account_id)
    view = (
        None if role is None else await _view(tx, gid, await _group(tx, gid), admin=role == ADMIN)
    )
    return GroupResult(view, [fanout])


async def _notify(
    tx: Tx,
    group_id: int,
    gid: bytes,
    actor: Sender,
    notice: GroupNotice,
    now_ms: int,
    audience: list[int] | None = None,
) -> Fanout:
    """Queue a notice for every device of the members (or of the audience)."""
    if audience is None:
        pks = [pk for pk, _, _, _ in await _devices(tx, group_id)]
    else:
        pks = await _account_devices(tx, audience)
    return await _fan_out(tx, gid, actor, GROUP_NOTICE, encode_notice(notice), now_ms, pks)


async def _fan_out(
    tx: Tx, gid: bytes, actor: Sender, kind: int, body: bytes, now_ms: int, pks: list[int]
) -> Fanout:
    """Store a group envelope once and queue a reference to it for each device."""
    row = await tx.fetchone(
        "INSERT INTO group_messages (gid, sender, sender_device, body, ts) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        gid,
        actor.number,
        actor.device_id,
        body,
        now_ms,
    )
    assert row is not None
    eids = await tx.insert_refs(pks, kind, now_ms, int(row[0]))
    targets = list(zip(pks, eids, strict=True))
    return Fanout(gid, actor.number, actor.device_id, kind, body, now_ms, targets)


async def _still_queued(tx: Tx, gid: bytes, actor: Sender, ts: int) -> list[Fanout]:
    """The actor's group envelopes stored at ts that are still queued, one Fanout per body.

    Another message of the device in the same millisecond comes along; offering
    a queued envelope again is harmless (a feed ignores one it pushed already).
    """
    rows = await tx.fetchall(
        "SELECT g.id, g.body, e.type, e.device_pk, e.id FROM group_messages g "
        "JOIN envelopes e ON e.ts = g.ts AND e.message_id = g.id "
        "WHERE g.ts = ? AND g.gid = ? AND g.sender = ? AND g.sender_device = ? "
        "ORDER BY e.id",
        ts,
        gid,
        actor.number,
        actor.device_id,
    )
    fanouts: dict[int, Fanout] = {}
    for message_id, body, kind, device_pk, eid in rows:
        fanout = fanouts.get(int(message_id))
        if fanout is None:
            fanout = fanouts[int(message_id)] = Fanout(
                gid, actor.number, actor.device_id, int(kind), bytes(body), ts, []
            )
        fanout.targets.append((int(device_pk), int(eid)))
    return list(fanouts.values())


async def _group(tx: Tx, gid: bytes, lock: Lock | None = None) -> _Group:
    """A group by gid, its row locked for a send (SHARE) or a change (UPDATE) if asked."""
    clause = "" if lock is None else tx.share_lock if lock == SHARE else tx.update_lock
    row = await tx.fetchone(
        "SELECT id, version, send_policy, edit_policy, approval, invite IS NOT NULL "
        "FROM groups WHERE gid = ?" + clause,
        gid,
    )
    if row is None:
        raise ServiceError(ErrorCode.UNKNOWN_GROUP, "no such group, or you are not a member")
    settings = GroupSettings(send=row[2], edit=row[3], approval=bool(row[4]))
    return _Group(int(row[0]), int(row[1]), settings, bool(row[5]))


async def _role(tx: Tx, group_id: int, account_id: int) -> Role | None:
    row = await tx.fetchone(
        "SELECT role FROM group_members WHERE group_id = ? AND account_id = ?",
        group_id,
        account_id,
    )
    return None if row is None else _as_role(row[0])


async def _require_member(tx: Tx, group_id: int, account_id: int) -> Role:
    role = await _role(tx, group_id, account_id)
    if role is None:
        raise ServiceError(ErrorCode.UNKNOWN_GROUP, "no such group, or you are not a member")
    return role


async def _as_admin(tx: Tx, actor: Sender, gid: bytes) -> _Group:
    """The group, locked for a change, if the actor is one of its admins."""
    group = await _group(tx, gid, lock=UPDATE)
    if await _require_member(tx, group.id, actor.account_id) != ADMIN:
        raise ServiceError(ErrorCode.NOT_ALLOWED, "only the group's admins may do this")
    return group


async def _named_members(
    tx: Tx, group_id: int, numbers: list[str]
) -> tuple[dict[str, int], dict[int, Role]]:
    """The accounts of these numbers, all of which must be members, and every member's role."""
    accounts = await _accounts(tx, list(dict.fromkeys(numbers)))
    current = await _members(tx, group_id)
    strangers = [n for n, a in accounts.items() if a not in current]
    if strangers:
        raise ServiceError(ErrorCode.NOT_A_MEMBER, f"not in the group: {', '.join(strangers)}")
    return accounts, current


async def _view(tx: Tx, gid: bytes, group: _Group, *, admin: bool) -> GroupView:
    rows = await tx.fetchall(
        "SELECT a.number, m.role FROM group_members m JOIN accounts a ON a.id = m.account_id "
        "WHERE m.group_id = ? ORDER BY m.joined, a.id",
        group.id,
    )
    members = [GroupMember(number=str(r[0]), role=_as_role(r[1])) for r in rows]
    requests: list[str] = []
    if admin:
        requests = [
            str(r[0])
            for r in await tx.fetchall(
                "SELECT a.number FROM group_requests q JOIN accounts a ON a.id = q.account_id "
                "WHERE q.group_id = ? ORDER BY q.ts, a.id",
                group.id,
            )
        ]
    return GroupView(
        gid, group.version, members, group.settings, requests, group.has_link and admin
    )


async def _device_set(tx: Tx, group: _Group) -> DeviceSet:
    """The group's devices, kept between sends where one writer sees every change.

    The key holds the version, which every membership change bumps; a change
    of an account's devices (registering again) clears the whole cache.
    """
    cache = tx.cache
    key = ("group-devices", group.id, group.version)
    found = cache.get(key) if cache is not None else None
    if isinstance(found, DeviceSet):
        return found
    devices = DeviceSet(await _devices(tx, group.id))
    if cache is not None:
        if len(cache) >= DEVICE_SETS:
            cache.clear()
        cache[key] = devices
    return devices


async def _members(tx: Tx, group_id: int) -> dict[int, Role]:
    rows = await tx.fetchall(
        "SELECT account_id, role FROM group_members WHERE group_id = ?", group_id
    )
    return {int(r[0]): _as_role(r[1]) for r in rows}


async def _devices(tx: Tx, group_id: int) -> list[tuple[int, str, int, int]]:
    """(device pk, number, device id, account id) of every member device."""
    rows = await tx.fetchall(
        "SELECT d.pk, a.number, d.device_id, a.id FROM group_members m "
        "JOIN accounts a ON a.id = m.account_id JOIN devices d ON d.account_id = a.id "
        "WHERE m.group_id = ? ORDER BY d.pk",
        group_id,
    )
    return [(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


async def _account_devices(tx: Tx, account_ids: list[int]) -> list[int]:
    pks: list[int] = []
    for account_id in account_ids:
        rows = await tx.fetchall("SELECT pk FROM devices WHERE account_id = ?", account_id)
        pks.extend(int(r[0]) for r in rows)
    return pks


async def _accounts(tx: Tx, numbers: list[str]) -> dict[str, int]:
    """number -> account id, in the order given; unknown_account if one is missing."""
    found: dict[str, int] = {}
    for number in numbers:
        row = await tx.fetchone("SELECT id FROM accounts WHERE number = ?", number)
        if row is None:
            raise ServiceError(ErrorCode.UNKNOWN_ACCOUNT, f"{number} is not on this server")
        found[number] = int(row[0])
    return found


async def _check_group_counts(tx: Tx, account_ids: list[int], limits: GroupLimits) -> None:
    full = []
    for account_id in account_ids:
        row = await tx.fetchone(
            "SELECT count(*) FROM group_members WHERE account_id = ?", account_id
        )
        if row is not None and int(row[0]) >= limits.max_groups:
            full.append(account_id)
    if full:
        rows = [await tx.fetchone("SELECT number FROM accounts WHERE id = ?", a) for a in full]
        names = ", ".join(str(r[0]) for r in rows if r is not None)
        raise ServiceError(
            ErrorCode.TOO_MANY_GROUPS,
            f"already in {limits.max_groups} groups, the most an account may join: {names}",
        )


async def _insert_members(
    tx: Tx, group_id: int, members: list[tuple[int, Role]], now_ms: int
) -> None:
    if members:
        # `joined` orders members by arrival; members of one change tie (account id decides)
        await tx.executemany(
            "INSERT INTO group_members (group_id, account_id, role, joined) VALUES (?, ?, ?, ?)",
            [(group_id, a, role, now_ms) for a, role in members],
        )


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(b"plauder-invite-v1\x00" + token.encode()).digest()


def _as_role(value: object) -> Role:
    return ADMIN if value == ADMIN else MEMBER
