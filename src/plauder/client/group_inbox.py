"""Receiving in groups: notices, Megolm messages and state, key shares and group receipts."""

import logging
from collections.abc import Callable

import msgspec

from plauder.client.connection import next_request_id
from plauder.client.contacts import Contacts
from plauder.client.errors import ClientError, ServerError
from plauder.client.events import (
    DecryptionError,
    Event,
    MessageReceived,
    ReceiptReceived,
)
from plauder.client.group_book import GroupBook
from plauder.client.group_keys import GroupKeys
from plauder.client.group_rights import Act, doing, member_may, refusal
from plauder.client.group_store import GroupRecord, WaitingMessage
from plauder.client.keys import Keys
from plauder.client.link import Link
from plauder.client.media import Attachment
from plauder.client.profile import Profile
from plauder.client.store import STATUS_RANK
from plauder.crypto import (
    DecryptionFailed,
    GroupKeyShare,
    ReplayedMessage,
    UnknownGroupSession,
    UntrustedDevice,
)
from plauder.protocol.content import GroupKey, GroupState, Media, Receipt, Text, decode_content
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import DeviceKeys, Envelope, GetGroup, GroupInfo, GroupNotice
from plauder.protocol.groups import (
    GROUP_MESSAGE,
    GROUP_NOTICE,
    GROUP_STATE,
    decode_body,
    decode_notice,
)

log = logging.getLogger(__name__)


class GroupInbox:
    """Applies what arrives for groups; the Inbox acknowledges once this returned.

    A message or state from a number that may not send it in this device's view
    of the group, and a key share from a non-member, are refused (a
    DecryptionError) before anything is decrypted or imported. A message whose
    session key has not arrived is kept (and acknowledged) and decrypted when
    the key comes. Replays of a (session, index) are dropped.
    """

    def __init__(
        self,
        profile: Profile,
        keys: Keys,
        group_keys: GroupKeys,
        book: GroupBook,
        contacts: Contacts,
        link: Link,
        welcome: Callable[[str], None] = lambda gid: None,
        attach: Callable[[str, str, Media], Attachment] | None = None,
    ) -> None:
        self._welcome = welcome
        self._attach = attach
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
        known = self._book.groups.get(gid)
        if known is None or not known.members:  # a new device or profile of a member
            info = await self._fetch(gid, strict=True)
            if info is not None:
                with self._store.transaction():
                    known = self._book.apply_info(info)
        record = known or GroupRecord(gid=gid)
        act: Act = "edit" if env.type == GROUP_STATE else "send"
        reason = refusal(record, env.sender, act)
        park = bool(reason) and _blind(record, env.sender)
        if reason and not park:
            return self._rejected(env, seen, f"group message refused: {reason}")
        device = await self._contacts.sender_device(env.sender, env.sender_device)
        if device is None:
            return self._rejected(env, seen, "the sender's device is unknown or not signed")
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
                    if park:  # until the notices show whether the sender was a member then
                        self._book.groups.add_waiting(message, parked=True)
                        events = []
                    else:
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
        if known is None or not known.members:  # joined lately: the whole view, or try again
            info = await self._fetch(gid, strict=True)
        elif notice.version > known.version + 1:
            info = await self._fetch(gid)  # missed changes: the whole view
        async with self._keys.lock:
            try:
                with self._store.transaction():
                    if info is not None:
                        self._book.apply_info(info)
                    event = self._book.apply_notice(gid, notice, env.ts)
                    events = self._released(gid, notice)
                    self._group_keys.persist()
                    seen()
            except BaseException:
                self._group_keys.forget_inbound()
                raise
        if notice.action == "joined" and self._welcomes(gid, notice.numbers):
            self._welcome(gid)
        return ([] if event is None else [event]) + events

    def _welcomes(self, gid: str, joiners: list[str]) -> bool:
        """Whether this device tells people who joined by link the group's name.

        Nobody sent them the name (an admin adding someone sends it): the
        longest-standing admin's devices do, if they know it.
        """
        record = self._book.groups.get(gid)
        if record is None or not record.name or self._number in joiners:
            return False
        admins = [n for n, role in record.members.items() if role == "admin"]
        return bool(admins) and admins[0] == self._number

    def _released(self, gid: str, notice: GroupNotice) -> list[Event]:
        """Parked messages: shown if the notice shows their sender leaving; refused once caught up.

        Messages are parked while the group's first view, from the server, is
        ahead of the notices: someone removed since may have sent them.
        """
        groups = self._book.groups
        parked = groups.parked(gid)
        if not parked:
            return []
        leaving = notice.action in ("removed", "left")
        gone = set(notice.numbers or [notice.actor]) if leaving else set()
        record = self._book.record(gid)
        events: list[Event] = []
        for message in parked:
            if message.sender not in gone and record.earlier is not None:
                continue  # not caught up yet
            groups.remove_waiting(message.seq)
            act: Act = "edit" if message.type == GROUP_STATE else "send"
            if message.sender in gone and member_may(record.settings, act):
                events += self._decrypt(message, keep=True)  # a member's, from before
                continue
            reason = f"{message.sender} is not a member of the group"
            if message.sender in gone:  # a member then, but its role then is not known
                reason = f"{message.sender} left, and only admins may {doing(act)} the group"
            events.append(
                DecryptionError(
                    message.sender, message.sender_device, f"group message refused: {reason}"
                )
            )
        return events

    async def _fetch(self, gid: str, strict: bool = False) -> GroupInfo | None:
        """The server's view of a group; None if we are not in it (any more) or it is away.

        `strict`: only None if we are not in it; any other error is raised, so the
        envelope is not acknowledged and comes again.
        """
        try:
            answer = await self._link.request(
                GetGroup(id=next_request_id(), gid=bytes.fromhex(gid))
            )
        except ServerError as exc:
            if strict and exc.code != ErrorCode.UNKNOWN_GROUP:
                raise
            log.info("group %s not fetched: %s", gid, exc)
            return None
        except ClientError as exc:
            if strict:
                raise
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
        if isinstance(content, Text | Media) and message.type == GROUP_MESSAGE:
            return self._text(message, content)
        if isinstance(content, GroupState) and message.type != GROUP_MESSAGE:
            event = self._book.apply_state(message.gid, message.sender, content, message.ts)
            return [] if event is None else [event]
        kind = type(content).__struct_config__.tag
        reason = f"group message refused: a {kind} document in an envelope of type {message.type}"
        return [DecryptionError(message.sender, message.sender_device, reason)]

    def _text(self, message: WaitingMessage, text: Text | Media) -> list[Event]:
        """A text or a file in a group: stored, and an event unless this account sent it."""
        own = message.sender == self._number  # sent by another device of this account
        body = text.body if isinstance(text, Text) else text.caption
        added = self._store.add_message(
            id=text.id,
            chat=message.gid,
            outgoing=own,
            sender=message.sender,
            body=body,
            ts=text.ts,
            server_ts=message.ts,
            status="sent" if own else "received",
        )
        if added and isinstance(text, Media):
            self._store.put_media(message.sender, text.id, text)
        if not added or own:
            return []
        self._store.add_pending_receipt(message.sender, text.id, message.gid)
        name = self._book.record(message.gid).name
        media = None
        if isinstance(text, Media) and self._attach is not None:
            media = self._attach(message.sender, text.id, text)
        return [
            MessageReceived(
                text.id, message.sender, body, text.ts, message.ts, message.gid, name, media
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
        known = self._book.groups.get(key.group)
        reason = refusal(known, sender, "share") if known is not None and known.members else ""
        if reason and not (known is not None and _blind(known, sender)):
            return [DecryptionError(sender, device.device_id, f"group key refused: {reason}")]
        try:
            self._group_keys.import_share(share, device.identity_key, device)
        except UntrustedDevice as exc:
            return [DecryptionError(sender, device.device_id, f"group key refused: {exc}")]
        named = None
        if known is None or not known.members:  # the name counts once members show who may edit
            self._book.adopt_state(key.group, key.name, key.description, key.state_ts, sender)
        elif not reason and not refusal(known, sender, "edit"):
            named = self._book.adopt_state(key.group, key.name, key.description, key.state_ts)
        events: list[Event] = [] if named is None else [named]
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


def _blind(record: GroupRecord, sender: str) -> bool:
    """Whether a non-member may have been one earlier in the stream: the first view is ahead."""
    earlier = record.earlier
    return earlier is not None and earlier.blind and sender not in record.members
