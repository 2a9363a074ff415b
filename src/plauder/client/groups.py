"""The SDK's groups: `client.groups` (create, list, find, join) and `Group` (send, manage, read)."""

import builtins
import dataclasses
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from plauder.client.connection import next_request_id
from plauder.client.contacts import normalize
from plauder.client.errors import ServerError, UnknownGroup
from plauder.client.group_book import SYSTEM, GroupBook
from plauder.client.group_store import GroupRecord
from plauder.client.link import Link
from plauder.client.media import MediaService
from plauder.client.outbox import Outbox
from plauder.client.sending import SEND_TIMEOUT, FileSending
from plauder.client.store import STATUS_RANK, HistoryEntry, LocalStore
from plauder.clock import Clock
from plauder.crypto.invite import InvalidCard, InviteCard, new_link_key, open_card, seal_card
from plauder.protocol.content import Content, GroupState, Media, Receipt, Text, encode_content
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import (
    ClientFrame,
    GetGroup,
    GroupAdd,
    GroupAnswer,
    GroupCreate,
    GroupInfo,
    GroupInvite,
    GroupJoin,
    GroupLeave,
    GroupLink,
    GroupList,
    GroupRemove,
    GroupSetRole,
    GroupSetSettings,
    GroupSettings,
    JoinRequested,
    ListGroups,
)
from plauder.protocol.groups import GID_BYTES, key_of, link, token_of


@dataclass(frozen=True, slots=True)
class GroupParts:
    """What `Groups` and each `Group` work with, built once by the Client."""

    number: str
    store: LocalStore
    book: GroupBook
    link: Link
    outbox: Outbox
    clock: Clock
    media: MediaService

    async def info(self, frame: ClientFrame) -> GroupRecord:
        """Make a request answered with `group_info` and take the answer's view."""
        answer = await self.link.request(frame)
        assert isinstance(answer, GroupInfo)
        with self.store.transaction():
            return self.book.apply_info(answer)

    async def send(
        self,
        gid: str,
        content: Content,
        cmid: bytes,
        message: tuple[str, str, int] | None,
        timeout: float = SEND_TIMEOUT,
    ) -> None:
        """Queue a group send and wait until the server stored it."""
        media = content if isinstance(content, Media) else None
        entry = self.outbox.queue_group(gid, cmid, encode_content(content), message, media)
        await self.outbox.await_sent(entry, timeout)


class Groups:
    """The groups of this account, as this device knows them, and the requests that change them."""

    def __init__(self, parts: GroupParts) -> None:
        self._parts = parts

    async def create(
        self,
        name: str,
        members: Iterable[str],
        description: str = "",
        settings: GroupSettings | None = None,
    ) -> "Group":
        """Create a group with us as its admin; the members learn its name, encrypted."""
        numbers = [normalize(n) for n in members]
        frame = GroupCreate(
            id=next_request_id(),
            gid=secrets.token_bytes(GID_BYTES),
            members=[n for n in numbers if n != self._parts.number],
            settings=settings or GroupSettings(),
        )
        group = Group(self._parts, (await self._parts.info(frame)).gid)
        await group.set_info(name, description)
        return group

    def list(self) -> builtins.list["Group"]:
        """The groups this account is a member of, by name (from the local store)."""
        return [Group(self._parts, r.gid) for r in self._parts.book.groups.all() if r.role]

    def get(self, name_or_gid: str) -> "Group":
        """A group by its gid (hex, or a unique prefix of it) or its name; UnknownGroup if none."""
        records = self._parts.book.groups.all()
        key = name_or_gid.strip()
        exact = [r for r in records if r.gid == key.lower()]
        named = [r for r in records if r.name == key] or [
            r for r in records if r.name.casefold() == key.casefold()
        ]
        prefixed = [r for r in records if len(key) >= 6 and r.gid.startswith(key.lower())]
        for found in (exact, [r for r in named if r.role] or named, prefixed):
            if len(found) == 1:
                return Group(self._parts, found[0].gid)
            if len(found) > 1:
                raise UnknownGroup(f"several groups are called {key}: use the group's id")
        raise UnknownGroup(f"no group {key} on this device")

    async def refresh(self) -> builtins.list["Group"]:
        """Fetch the server's list of our groups and the members of those that changed."""
        parts = self._parts
        answer = await parts.link.request(ListGroups(id=next_request_id()))
        assert isinstance(answer, GroupList)
        listed = {g.gid.hex(): g for g in answer.groups}
        for gid, summary in listed.items():
            known = parts.book.groups.get(gid)
            if known is None or known.version < summary.version or not known.role:
                await parts.info(GetGroup(id=next_request_id(), gid=summary.gid))
        for record in parts.book.groups.all():
            if record.role and record.gid not in listed:
                with parts.store.transaction():
                    parts.book.left(record.gid)
        return self.list()

    async def join(self, invite: str) -> "Group | None":
        """Join by invite link; None while the request waits for an admin's approval.

        The group's name and description come from the link's card at once
        (the server cannot read it); a card that does not open is ignored, and
        the name then comes from the members' devices as before.
        """
        parts = self._parts
        answer = await parts.link.request(GroupJoin(id=next_request_id(), token=token_of(invite)))
        if not isinstance(answer, GroupInfo):
            assert isinstance(answer, JoinRequested)
            return None
        card = _open_card(invite, answer.card)
        gid = answer.gid.hex()
        with parts.store.transaction():
            parts.book.apply_join(answer)
            if card is not None:
                parts.book.adopt_state(gid, card.name, card.description, card.state_ts)
        return Group(parts, gid)


def _open_card(invite: str, sealed: bytes) -> InviteCard | None:
    """The invite card of a link, if it has one that opens with its key."""
    key = key_of(invite)
    if not key or not sealed:
        return None
    try:
        return open_card(key, sealed)
    except InvalidCard:
        return None


class Group(FileSending):
    """One group; its properties read the local store each time, so they are always current."""

    def __init__(self, parts: GroupParts, gid: bytes | str) -> None:
        self._parts = parts
        self.gid = gid.hex() if isinstance(gid, bytes) else gid

    def __repr__(self) -> str:
        return f"Group({self.gid}, {self.name!r})"

    @property
    def _record(self) -> GroupRecord:
        return self._parts.book.record(self.gid)

    @property
    def name(self) -> str:
        """The group's name ("" until a member's key or state message brought it)."""
        return self._record.name

    @property
    def description(self) -> str:
        """The group's description."""
        return self._record.description

    @property
    def members(self) -> dict[str, str]:
        """Each member's number and role ("admin" or "member")."""
        return dict(self._record.members)

    @property
    def role(self) -> str:
        """Our role: "admin", "member", or "" once we left or were removed."""
        return self._record.role

    @property
    def settings(self) -> GroupSettings:
        """Who may send and edit, and whether link joins need approval."""
        return self._record.settings

    @property
    def requests(self) -> tuple[str, ...]:
        """Numbers waiting for approval to join (seen by admins)."""
        return self._record.requests

    @property
    def version(self) -> int:
        """The group's version as last seen: it grows with every membership or settings change."""
        return self._record.version

    @property
    def unread(self) -> int:
        """How many received messages are not marked read yet."""
        return len(self._parts.book.groups.unread(self.gid))

    # --- messages ------------------------------------------------------------------------

    async def send(self, text: str, *, timeout: float = SEND_TIMEOUT) -> str:
        """Encrypt and send a text to every member; returns its id once the server stored it.

        NotConnected after `timeout`: the message stays queued and goes out later.
        """
        cmid = secrets.token_bytes(16)
        mid = cmid.hex()
        now = self._parts.clock.now_ms()
        content = Text(id=mid, ts=now, body=text)
        await self._parts.send(self.gid, content, cmid, (mid, text, now), timeout)
        return mid

    async def send_text(self, text: str, *, timeout: float = SEND_TIMEOUT) -> str:
        """The same as `send`, named as in `Chat`."""
        return await self.send(text, timeout=timeout)

    @property
    def _media_parts(self) -> tuple[MediaService, Outbox, Clock]:
        return self._parts.media, self._parts.outbox, self._parts.clock

    @property
    def _conversation(self) -> tuple[str, bool]:
        return self.gid, True

    def history(self, limit: int = 50) -> list[HistoryEntry]:
        """The last messages and system lines (sender "") of the group, oldest first."""
        return self._parts.store.history(self.gid, limit, by_time=True)

    def receipts(self, message_id: str) -> dict[str, str]:
        """Each recipient's status of a message we sent: sent, delivered or read."""
        return self._parts.book.groups.receipts(message_id)

    def summary(self, message_id: str) -> str:
        """A message's receipts in words: "delivered to all", "read by 2 of 3", "failed", ..."""
        status = self._parts.book.groups.sent_status(self.gid, message_id)
        if status in UNSENT:  # the server never stored it: nobody got it
            return UNSENT[status]
        return receipt_summary(self.receipts(message_id))

    async def mark_read(self) -> list[str]:
        """Mark the group's received messages read and tell their senders; returns their ids."""
        unread = self._parts.book.groups.unread(self.gid)
        by_sender: dict[str, list[str]] = {}
        for sender, mid in unread:
            by_sender.setdefault(sender, []).append(mid)
        store = self._parts.store
        with store.transaction():
            for sender, ids in by_sender.items():
                store.set_status(sender, ids, "read")
        outbox = self._parts.outbox
        for sender, ids in by_sender.items():
            if sender == SYSTEM:
                continue
            content = encode_content(Receipt(status="read", ids=ids, group=self.gid))
            entry = await outbox.queue(sender, secrets.token_bytes(16), content)
            await outbox.await_sent(entry, SEND_TIMEOUT)
        return [mid for _, mid in unread]

    # --- membership and settings ---------------------------------------------------------

    async def add(self, *numbers: str) -> None:
        """Admins: add members; they can read what is sent from now on, not before."""
        await self._change(GroupAdd, numbers)
        await self.resend_info()

    async def remove(self, *numbers: str) -> None:
        """Admins: remove members; nothing sent after this can be read by them."""
        await self._change(GroupRemove, numbers)

    async def promote(self, *numbers: str) -> None:
        """Admins: make members admins."""
        await self._set_role(numbers, "admin")

    async def demote(self, *numbers: str) -> None:
        """Admins: make admins plain members."""
        await self._set_role(numbers, "member")

    async def leave(self) -> None:
        """Leave the group."""
        parts = self._parts
        await parts.link.request(GroupLeave(id=next_request_id(), gid=bytes.fromhex(self.gid)))
        with parts.store.transaction():
            parts.book.left(self.gid)

    async def rename(self, name: str) -> None:
        """Give the group a new name (sent encrypted to the members)."""
        await self.set_info(name, self.description)

    async def describe(self, description: str) -> None:
        """Give the group a new description (sent encrypted to the members)."""
        await self.set_info(self.name, description)

    async def set_info(self, name: str, description: str, ts: int | None = None) -> None:
        """Set name and description together, for us and (encrypted) for every member.

        With the `ts` of the state members have, it only reaches those who lack it.
        """
        parts = self._parts
        cmid = secrets.token_bytes(16)
        now = parts.clock.now_ms()
        state = GroupState(id=cmid.hex(), ts=ts or now, name=name, description=description)
        await parts.send(self.gid, state, cmid, None)
        with parts.store.transaction():
            parts.book.apply_state(self.gid, parts.number, state, now)

    async def set_settings(self, settings: GroupSettings) -> None:
        """Admins: who may send and edit info, and whether link joins need approval."""
        frame = GroupSetSettings(
            id=next_request_id(), gid=bytes.fromhex(self.gid), settings=settings
        )
        await self._parts.info(frame)

    async def invite_link(self) -> str:
        """Admins: a new invite link (the previous one stops working)."""
        return await self._invite(revoke=False)

    async def revoke_link(self) -> None:
        """Admins: the invite link stops working."""
        await self._invite(revoke=True)

    async def approve(self, *numbers: str) -> None:
        """Admins: let these numbers in (they asked by invite link)."""
        await self._answer(numbers, approve=True)
        await self.resend_info()

    async def deny(self, *numbers: str) -> None:
        """Admins: refuse these numbers' join requests."""
        await self._answer(numbers, approve=False)

    async def refresh(self) -> None:
        """Fetch members, roles and settings from the server (ServerError once we are out)."""
        parts = self._parts
        try:
            await parts.info(GetGroup(id=next_request_id(), gid=bytes.fromhex(self.gid)))
        except ServerError as exc:
            if exc.code == ErrorCode.UNKNOWN_GROUP:  # removed while we did not listen
                with parts.store.transaction():
                    parts.book.left(self.gid)
            raise

    async def _change(
        self, kind: type[GroupAdd] | type[GroupRemove], numbers: Iterable[str]
    ) -> None:
        frame = kind(
            id=next_request_id(),
            gid=bytes.fromhex(self.gid),
            numbers=[normalize(n) for n in numbers],
        )
        await self._parts.info(frame)

    async def _set_role(self, numbers: Iterable[str], role: str) -> None:
        frame = GroupSetRole(
            id=next_request_id(),
            gid=bytes.fromhex(self.gid),
            numbers=[normalize(n) for n in numbers],
            role="admin" if role == "admin" else "member",
        )
        await self._parts.info(frame)

    async def _invite(self, revoke: bool) -> str:
        key, card = b"", b""
        if not revoke:  # the name and description, readable by whoever holds the link
            record = self._record
            key = new_link_key()
            card = seal_card(key, InviteCard(record.name, record.description, record.state_ts))
        frame = GroupInvite(
            id=next_request_id(), gid=bytes.fromhex(self.gid), revoke=revoke, card=card
        )
        answer = await self._parts.link.request(frame)
        assert isinstance(answer, GroupLink)
        with self._parts.store.transaction():
            self._parts.book.groups.save(dataclasses.replace(self._record, link=not revoke))
        return link(answer.token, key) if answer.token else ""

    async def _answer(self, numbers: Iterable[str], approve: bool) -> None:
        frame = GroupAnswer(
            id=next_request_id(),
            gid=bytes.fromhex(self.gid),
            numbers=[normalize(n) for n in numbers],
            approve=approve,
        )
        await self._parts.info(frame)

    async def resend_info(self) -> None:
        """Send name and description again, so new members see them at once (if we may edit)."""
        record = self._record
        if record.name and (record.settings.edit == "all" or record.role == "admin"):
            await self.set_info(record.name, record.description, record.state_ts)


UNSENT = {"pending": "not sent yet", "failed": "failed"}  # a sent message's summary before `sent`


def receipt_summary(receipts: dict[str, str]) -> str:
    """Receipts of one message in words: "delivered to all", "read by 2 of 3", ..."""
    n = len(receipts)
    if n == 0:
        return "sent"
    delivered = sum(STATUS_RANK.get(s, 0) >= STATUS_RANK["delivered"] for s in receipts.values())
    read = sum(s == "read" for s in receipts.values())
    if read == n:
        return "read by all"
    parts = ["delivered to all" if delivered == n else f"delivered to {delivered} of {n}"]
    if read:
        parts.append(f"read by {read} of {n}")
    return ", ".join(parts)
