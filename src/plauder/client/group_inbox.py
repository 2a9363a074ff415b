"""Receiving in groups: notices, Megolm messages and state, key shares and group receipts."""

import logging
from collections.abc import Callable

import msgspec

from plauder.client.connection import next_request_id
from plauder.client.contacts import Contacts
from plauder.client.errors import ClientError
from plauder.client.events import (
    DecryptionError,
    Event,
    MessageReceived,
    ReceiptReceived,
)
from plauder.client.group_book import GroupBook
from plauder.client.group_keys import GroupKeys
from plauder.client.group_store import WaitingMessage
from plauder.client.keys import Keys
from plauder.client.link import Link
from plauder.client.profile import Profile
from plauder.client.store import STATUS_RANK
from plauder.crypto import (
    DecryptionFailed,
    GroupKeyShare,
    ReplayedMessage,
    UnknownGroupSession,
    UntrustedDevice,
)
from plauder.protocol.content import GroupKey, GroupState, Receipt, Text, decode_content
from plauder.protocol.frames import DeviceKeys, Envelope, GetGroup, GroupInfo
from plauder.protocol.groups import GROUP_MESSAGE, GROUP_NOTICE, decode_body, decode_notice

log = logging.getLogger(__name__)


class GroupInbox:
    """Applies what arrives for groups; the Inbox acknowledges once this returned.

    A message whose session key has not arrived is kept (and acknowledged) and
    decrypted when the key comes. Replays of a (session, index) are dropped.
    """

    def __init__(
        self,
        profile: Profile,
        keys: Keys,
        group_keys: GroupKeys,
        book: GroupBook,
        contacts: Contacts,
        link: Link,
    ) -> None:
        self._number = profile.number
        self._store = profile.store
        self._keys = keys
        self._group_keys = group_keys
        self._book = book
        self._contacts = contacts
        self._link = link

    async def receive(self, env: Envelope, seen: Callable[[], None]) -> list[Event]:
        """Apply a group envelope (types 2 to 4); `seen()` runs in the same transaction."""
        gid = env.group.hex()
        if env.type == GROUP_NOTICE:
            return await self._notice(gid, env, seen)
        try:
            body = decode_body(env.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._rejected(env, seen, f"unreadable group message: {exc}")
        device = await self._contacts.sender_device(env.sender, env.sender_device)
        if device is None:
            return self._rejected(env, seen, "the sender's device is unknown or not signed")
        known = self._book.groups.get(gid)
        if known is None or not known.members:  # a new device or profile of a member
            info = await self._fetch(gid)
            if info is not None:
                with self._store.transaction():
                    self._book.apply_info(info)
        message = WaitingMessage(
            seq=0,
            gid=gid,
            sender=env.sender,
            sender_device=env.sender_device,
            sender_key=device.identity_key,
            session_id=body.session_id,
            type=env.type,
            ciphertext=body.ciphertext,
            ts=env.ts,
        )
        async with self._keys.lock:
            try:
                with self._store.transaction():
                    events = self._decrypt(message, keep=True)
                    self._group_keys.persist()
                    seen()
            except BaseException:
                self._group_keys.forget_inbound()
                raise
        return events

    def _rejected(self, env: Envelope, seen: Callable[[], None], reason: str) -> list[Event]:
        with self._store.transaction():
            seen()
        return [DecryptionError(env.sender, env.sender_device, reason)]

    async def _notice(self, gid: str, env: Envelope, seen: Callable[[], None]) -> list[Event]:
        try:
            notice = decode_notice(env.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._rejected(env, seen, f"unreadable group notice: {exc}")
        known = self._book.groups.get(gid)
        info = None
        if known is None or notice.version > known.version + 1:
            info = await self._fetch(gid)  # joined lately, or missed changes: the whole view
        with self._store.transaction():
            if info is not None:
                self._book.apply_info(info)
            event = self._book.apply_notice(gid, notice, env.ts)
            seen()
        return [] if event is None else [event]

    async def _fetch(self, gid: str) -> GroupInfo | None:
        """The server's view of a group; None if we are not in it (any more) or it is away."""
        try:
            answer = await self._link.request(
                GetGroup(id=next_request_id(), gid=bytes.fromhex(gid))
            )
        except ClientError as exc:
            log.info("group %s not fetched: %s", gid, exc)
            return None
        return answer if isinstance(answer, GroupInfo) else None

    def _decrypt(self, message: WaitingMessage, keep: bool) -> list[Event]:
        """Decrypt and apply a group message; keep it for later if its key is missing."""
        try:
            plain = self._group_keys.decrypt(
                message.gid, message.sender_key, message.session_id, message.ciphertext
            )
        except UnknownGroupSession:
            if keep:
                self._book.groups.add_waiting(message)
            return []
        except ReplayedMessage:
            return []
        except DecryptionFailed as exc:
            return [DecryptionError(message.sender, message.sender_device, str(exc))]
        try:
            content = decode_content(plain.plaintext)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reason = f"unreadable group message: {exc}"
            return [DecryptionError(message.sender, message.sender_device, reason)]
        if isinstance(content, Text) and message.type == GROUP_MESSAGE:
            return self._text(message, content)
        if isinstance(content, GroupState) and message.type != GROUP_MESSAGE:
            event = self._book.apply_state(message.gid, message.sender, content, message.ts)
            return [] if event is None else [event]
        return []

    def _text(self, message: WaitingMessage, text: Text) -> list[Event]:
        own = message.sender == self._number  # sent by another device of this account
        added = self._store.add_message(
            id=text.id,
            chat=message.gid,
            outgoing=own,
            sender=message.sender,
            body=text.body,
            ts=text.ts,
            server_ts=message.ts,
            status="sent" if own else "received",
        )
        if not added or own:
            return []
        self._store.add_pending_receipt(message.sender, text.id, message.gid)
        name = self._book.record(message.gid).name
        return [
            MessageReceived(
                text.id, message.sender, text.body, text.ts, message.ts, message.gid, name
            )
        ]

    def apply_key(self, sender: str, device: DeviceKeys, key: GroupKey) -> list[Event]:
        """Import a session key shared over Olm, then decrypt what waited for it.

        Runs inside the Inbox's transaction and crypto lock.
        """
        share = GroupKeyShare(
            group_id=key.group,
            session_id=key.session_id,
            session_key=key.session_key,
            message_index=key.message_index,
            sender_identity_key=key.sender_identity_key,
            sender_signing_key=key.sender_signing_key,
            signature=key.signature,
        )
        try:
            self._group_keys.import_share(share, device.identity_key, device)
        except UntrustedDevice as exc:
            return [DecryptionError(sender, device.device_id, f"group key refused: {exc}")]
        known = self._book.groups.get(key.group)
        if known is None or sender in known.members:  # members name groups, not strangers
            self._book.adopt_state(key.group, key.name, key.description, key.state_ts)
        events: list[Event] = []
        for waiting in self._book.groups.waiting(device.identity_key, key.session_id):
            events += self._decrypt(waiting, keep=False)
            self._book.groups.remove_waiting(waiting.seq)
        self._group_keys.persist()
        return events

    def apply_receipt(self, sender: str, receipt: Receipt) -> list[Event]:
        """A member's receipt for our group messages; the message's status follows the slowest."""
        groups = self._book.groups
        moved = [m for m in receipt.ids if groups.move_receipt(m, sender, receipt.status)]
        for mid in moved:
            slowest = min(STATUS_RANK.get(s, 0) for s in groups.receipts(mid).values())
            for status in ("delivered", "read"):
                if slowest >= STATUS_RANK[status]:
                    self._store.set_status(self._number, [mid], status)
        if not moved:
            return []
        return [ReceiptReceived(sender, receipt.status, tuple(moved), receipt.group)]
