"""Sending to a group: share this device's Megolm key with every member device, encrypt, store."""

import asyncio
import dataclasses
import secrets

import msgspec

from plauder.client.connection import next_request_id
from plauder.client.contacts import Contacts
from plauder.client.errors import ServerError
from plauder.client.group_keys import GroupKeys
from plauder.client.group_store import GroupStore, SharedDevice
from plauder.client.keys import Keys
from plauder.client.link import Link
from plauder.client.profile import Profile
from plauder.client.store import OutboxEntry
from plauder.clock import Clock
from plauder.protocol import codec
from plauder.protocol.content import GroupKey, GroupState, decode_content, encode_content
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import (
    DeviceKeys,
    DeviceRef,
    GroupDeviceList,
    GroupDevices,
    GroupSend,
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

    Before encrypting, it asks the server for every member's devices, starts a
    new session when a device it shared with is gone (or a member left, or the
    session is old or used up), and sends the session key over Olm to every
    device that lacks it, waiting until the server stored those keys. Sends to
    one group go out one at a time, in the order they were queued.
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
            targets, _ = await self._targets(gid, [])
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

    async def _targets(self, gid: str, claim: list[DeviceRef]) -> tuple[Targets, GroupDeviceList]:
        """Every member device but this one, verified against its account key, and the answer."""
        answer = await self._link.request(
            GroupDevices(id=next_request_id(), gid=bytes.fromhex(gid), claim=claim)
        )
        assert isinstance(answer, GroupDeviceList)
        targets: Targets = {}
        with self._store.transaction():
            for member in answer.members:
                self._contacts.adopt(member.number, member.account_key, member.devices)
                devices = [b.device for b in member.devices]
                if member.number == self._profile.number:
                    devices = [d for d in devices if d.device_id != self._profile.device_id]
                if devices:
                    targets[member.number] = devices
        return targets, answer

    async def _start_sessions(self, gid: str, accounts: Targets) -> None:
        """Start Olm sessions with the devices we have none with, from claimed pre-keys."""
        missing = [(n, d) for n, ds in accounts.items() for d in self._keys.without_session(ds)]
        if not missing:
            return
        refs = [DeviceRef(number=n, device_id=d.device_id) for n, d in missing]
        _, answer = await self._targets(gid, refs)
        bundles = [b for m in answer.members for b in m.devices]
        self._keys.start_sessions(bundles, {d.identity_key for _, d in missing})

    async def _share(self, gid: str, accounts: Targets) -> None:
        """Send the session key over Olm to every device of these accounts; wait until stored."""
        record = self._groups.get(gid)
        share = self._group_keys.key_share(gid)
        content = encode_content(
            GroupKey(
                group=gid,
                session_id=share.session_id,
                session_key=share.session_key,
                message_index=share.message_index,
                sender_identity_key=share.sender_identity_key,
                sender_signing_key=share.sender_signing_key,
                signature=share.signature,
                name=record.name if record else "",
                description=record.description if record else "",
                state_ts=record.state_ts if record else 0,
            )
        )
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


def _shared(number: str, device: DeviceKeys) -> SharedDevice:
    return (number, device.device_id, device.identity_key)
