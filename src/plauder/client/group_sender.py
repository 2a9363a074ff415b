"""Sending to a group: share this device's Megolm key with every member device, encrypt, store."""

import asyncio
import dataclasses
import secrets

import msgspec

from plauder.client.connection import next_request_id
from plauder.client.contacts import Contacts
from plauder.client.errors import ServerError, UnknownMembers
from plauder.client.group_book import GroupBook
from plauder.client.group_keys import GroupKeys
from plauder.client.group_store import GroupRecord, GroupStore, SharedDevice
from plauder.client.keys import Keys
from plauder.client.link import Link
from plauder.client.profile import Profile
from plauder.client.store import OutboxEntry
from plauder.clock import Clock
from plauder.crypto import GroupKeyShare
from plauder.protocol import codec
from plauder.protocol.content import GroupKey, GroupState, decode_content, encode_content
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import (
    DeviceKeys,
    DeviceRef,
    GetGroup,
    GroupDeviceList,
    GroupDevices,
    GroupInfo,
    GroupSend,
    MemberDevices,
    OutEnvelope,
    Send,
    Sent,
)
from plauder.protocol.groups import GroupBody, device_digest, encode_body

ATTEMPTS = 3  # prepare and send again this often when the group's devices changed meanwhile
DEFAULT_MAX_ENVELOPES = 64

Targets = dict[str, list[DeviceKeys]]  # number -> its devices that get the group's messages


class GroupSender:
    """Turns a queued group send into a `group_send` the server accepts.

    Before encrypting, it asks the server for every member's devices (and
    refuses to go on if the server lists an account this device does not know
    as a member), starts a new session when a device it shared with is gone
    (or a member left, or the session is old or used up), and sends the session
    key over Olm to every device that lacks it, waiting until the server stored
    those keys. Sends to one group go out one at a time, in the order they were
    queued.
    """

    def __init__(
        self,
        profile: Profile,
        keys: Keys,
        group_keys: GroupKeys,
        groups: GroupStore,
        contacts: Contacts,
        link: Link,
        clock: Clock,
    ) -> None:
        self._profile = profile
        self._store = profile.store
        self._keys = keys
        self._group_keys = group_keys
        self._groups = groups
        self._book = GroupBook(profile.number, profile.store, groups)
        self._contacts = contacts
        self._link = link
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    async def transmit(self, entry: OutboxEntry) -> Sent | None:
        """Send a queued group message until stored; None if it was sent meanwhile."""
        async with self._locks.setdefault(entry.chat, asyncio.Lock()):
            current = self._store.outbox_entry(entry.cmid)
            if current is None:
                return None  # another transmission of it finished first
            frame = msgspec.msgpack.decode(current.frame, type=GroupSend) if current.frame else None
            for attempt in range(ATTEMPTS):
                if frame is None:
                    frame = await self._prepare(current)
                try:
                    answer = await self._link.request(
                        msgspec.structs.replace(frame, id=next_request_id())
                    )
                except ServerError as exc:
                    changed = exc.code in (
                        ErrorCode.GROUP_DEVICES_CHANGED,
                        ErrorCode.MISMATCHED_DEVICES,
                    )
                    if not changed or attempt == ATTEMPTS - 1:
                        raise
                    frame = None
                    continue
                assert isinstance(answer, Sent)
                return answer
        raise AssertionError("unreachable")

    async def _prepare(self, entry: OutboxEntry) -> GroupSend:
        """Share keys where needed, encrypt, and store the frame with the session's new state."""
        gid = entry.chat
        async with self._keys.lock:
            targets = self._verified((await self._member_devices(gid)).members)
            now = self._clock.now_ms()
            record = self._groups.get(gid)
            session, shared = self._group_keys.outbound(gid)
            current = {_shared(n, d) for n, ds in targets.items() for d in ds}
            member_left = record is not None and record.rotate
            record_version = record.version if record is not None else -1
            if (
                session is None
                or session.needs_rotation(now, member_removed=member_left)
                or shared - current
            ):
                session = self._group_keys.start(gid, now)
                shared = set()
            lacking = {
                n: ds for n, ds in targets.items() if any(_shared(n, d) not in shared for d in ds)
            }
            if lacking:
                await self._start_sessions(gid, lacking)
                await self._share(gid, lacking)
            ciphertext = self._group_keys.encrypt(gid, entry.content, now)
            content = decode_content(entry.content)
            frame = GroupSend(
                id=0,
                gid=bytes.fromhex(gid),
                cmid=entry.cmid,
                body=encode_body(
                    GroupBody(session_id=ciphertext.session_id, ciphertext=ciphertext.ciphertext)
                ),
                digest=device_digest((n, d.device_id) for n, ds in targets.items() for d in ds),
                kind="state" if isinstance(content, GroupState) else "message",
            )
            with self._store.transaction():
                self._group_keys.persist()
                self._store.put_outbox(
                    dataclasses.replace(entry, frame=codec.encode(frame)), self._clock.now_ms()
                )
                fresh = self._groups.get(gid)  # notices may have come in meanwhile
                if fresh is not None and fresh.rotate and fresh.version == record_version:
                    self._groups.save(dataclasses.replace(fresh, rotate=False))
                if not isinstance(content, GroupState):
                    others = sorted(n for n in targets if n != self._profile.number)
                    self._groups.set_recipients(entry.cmid.hex(), others)
        return frame

    async def _member_devices(self, gid: str) -> GroupDeviceList:
        """The group's devices, once every account listed is a member in this device's view too.

        An account it does not know makes it ask `get_group` (the `added` notice
        may still be on its way) and, if the group changed in between, list the
        devices again. One still unknown is refused: UnknownMembers, nothing shared.
        So is one that `get_group` lists at a version this device already knew
        without it: every change of members raises the version.
        """
        answer = await self._device_list(gid, [])
        strangers = self._strangers(gid, answer)
        for _ in range(ATTEMPTS):
            if not strangers:
                return answer
            known = self._book.record(gid).version
            info = await self._link.request(GetGroup(id=next_request_id(), gid=bytes.fromhex(gid)))
            assert isinstance(info, GroupInfo)
            listed = {m.number for m in info.members}
            if info.version <= known and listed.intersection(strangers):
                raise UnknownMembers(gid, sorted(listed.intersection(strangers)))
            with self._store.transaction():
                self._book.apply_info(info)
            strangers = self._strangers(gid, answer)
            if strangers and info.version != answer.version:  # a change between the answers
                answer = await self._device_list(gid, [])
                strangers = self._strangers(gid, answer)
        if strangers:
            raise UnknownMembers(gid, strangers)
        return answer

    def _strangers(self, gid: str, answer: GroupDeviceList) -> list[str]:
        """The accounts a device list names that are not members in this device's view."""
        members = self._book.record(gid).members
        return [m.number for m in answer.members if m.number not in members]

    async def _device_list(self, gid: str, claim: list[DeviceRef]) -> GroupDeviceList:
        answer = await self._link.request(
            GroupDevices(id=next_request_id(), gid=bytes.fromhex(gid), claim=claim)
        )
        assert isinstance(answer, GroupDeviceList)
        return answer

    def _verified(self, members: list[MemberDevices]) -> Targets:
        """Every device of these members but this one, verified against its account key."""
        targets: Targets = {}
        with self._store.transaction():
            for member in members:
                self._contacts.adopt(member.number, member.account_key, member.devices)
                devices = [b.device for b in member.devices]
                if member.number == self._profile.number:
                    devices = [d for d in devices if d.device_id != self._profile.device_id]
                if devices:
                    targets[member.number] = devices
        return targets

    async def _start_sessions(self, gid: str, accounts: Targets) -> None:
        """Start Olm sessions with the devices we have none with, from claimed pre-keys."""
        missing = [(n, d) for n, ds in accounts.items() for d in self._keys.without_session(ds)]
        if not missing:
            return
        refs = [DeviceRef(number=n, device_id=d.device_id) for n, d in missing]
        answer = await self._device_list(gid, refs)
        members = [m for m in answer.members if m.number in accounts]  # those checked before
        self._verified(members)
        bundles = [b for m in members for b in m.devices]
        self._keys.start_sessions(bundles, {d.identity_key for _, d in missing})

    async def _share(self, gid: str, accounts: Targets) -> None:
        """Send the session key over Olm to every device of these accounts; wait until stored."""
        share = self._group_keys.key_share(gid)
        content = encode_content(key_document(share, self._book.record(gid)))
        conn = self._link.conn
        limit = (
            conn.welcome.limits.max_envelopes_per_send
            if conn is not None and conn.welcome is not None
            else DEFAULT_MAX_ENVELOPES
        )
        chunks: list[list[OutEnvelope]] = [[]]
        for number, devices in accounts.items():
            envelopes = self._keys.encrypt(number, devices, content)
            if chunks[-1] and len(chunks[-1]) + len(envelopes) > limit:
                chunks.append([])
            chunks[-1].extend(envelopes)
        with self._store.transaction():
            self._keys.persist()  # the Olm sessions moved on before anything leaves
        for chunk in chunks:
            frame = Send(id=next_request_id(), cmid=secrets.token_bytes(16), envelopes=chunk)
            answer = await self._link.request(frame)
            assert isinstance(answer, Sent)
        self._group_keys.shared(gid, {_shared(n, d) for n, ds in accounts.items() for d in ds})


def key_document(share: GroupKeyShare, record: GroupRecord) -> GroupKey:
    """The `group_key` document of a session key, with the group's name and description."""
    return GroupKey(
        group=share.group_id,
        session_id=share.session_id,
        session_key=share.session_key,
        message_index=share.message_index,
        sender_identity_key=share.sender_identity_key,
        sender_signing_key=share.sender_signing_key,
        signature=share.signature,
        name=record.name,
        description=record.description,
        state_ts=record.state_ts,
    )


def _shared(number: str, device: DeviceKeys) -> SharedDevice:
    return (number, device.device_id, device.identity_key)
