"""Receiving: process pushes, decrypt and apply envelopes once, acknowledge in batches."""

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable

import msgspec

from plauder.client.connection import next_request_id
from plauder.client.contacts import Contacts
from plauder.client.errors import TRANSIENT, ClientError, ConnectionLost, ServerError
from plauder.client.events import (
    DecryptionError,
    Event,
    MessageReceived,
    PresenceChanged,
    ReceiptReceived,
    TypingChanged,
)
from plauder.client.group_inbox import GroupInbox
from plauder.client.group_keys import GroupKeys
from plauder.client.keys import Keys
from plauder.client.link import Link
from plauder.client.media import Attachment
from plauder.client.outbox import Outbox
from plauder.client.profile import Profile
from plauder.client.tasks import Background
from plauder.clock import Clock
from plauder.crypto import CryptoError, DecryptionFailed
from plauder.protocol.content import (
    CallAnswer,
    CallHangup,
    CallOffer,
    CallReject,
    CallRinging,
    CallSelect,
    CallSignal,
    Content,
    GroupKey,
    Media,
    Receipt,
    Text,
    Typing,
    Unknown,
    decode_content,
    decode_unknown,
    encode_content,
)
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import (
    Ack,
    DeviceKeys,
    Drained,
    Envelope,
    KeysLow,
    Presence,
    ServerFrame,
)
from plauder.protocol.groups import GROUP_TYPES

log = logging.getLogger(__name__)

ACK_BATCH = 100  # acks waiting that go out at once
ACK_INTERVAL = 0.5  # seconds: at most one `ack` per connection this often
ACK_RETRY_SECONDS = 0.5


class Inbox:
    """Turns the pushes from the link into stored messages, events, acks and receipts.

    An envelope is acknowledged only after its message, its seen digest and its
    pending delivered receipt are stored, so a crash before the ack redelivers
    it, and the digest then recognises it. A connection gets at most one `ack` per
    ACK_INTERVAL (the first at once), or one at once when ACK_BATCH are waiting.
    """

    def __init__(
        self,
        profile: Profile,
        keys: Keys,
        contacts: Contacts,
        link: Link,
        outbox: Outbox,
        clock: Clock,
        background: Background,
        *,
        pushes: asyncio.Queue[ServerFrame],
        events: asyncio.Queue[Event],
        ack_delay: float,
        groups: GroupInbox,
        group_keys: GroupKeys,
        attach: Callable[[str, str, Media], Attachment],
        calls: Callable[[str, int, int, CallSignal], None],
    ) -> None:
        self._attach = attach
        self._calls = calls
        self._number = profile.number
        self._store = profile.store
        self._keys = keys
        self._contacts = contacts
        self._link = link
        self._outbox = outbox
        self._clock = clock
        self._background = background
        self._pushes = pushes
        self._events = events
        self.ack_delay = ack_delay
        self._drained = asyncio.Event()
        self._receipts_lock = asyncio.Lock()
        self._busy = 0
        self._idle = asyncio.Event()
        self._acks: list[int] = []
        self._ack_retry_pending = False
        self._ack_timer_pending = False
        self._acked_conn: object = None  # the connection of the last `ack`
        self._acked_at = 0.0  # and when it went out (monotonic)
        self._presence: dict[str, tuple[bool, int | None]] = {}
        self._groups = groups
        self._group_keys = group_keys

    async def run(self) -> None:
        """Process pushes one by one, for ever; flush acks and receipts when caught up."""
        while True:
            frame = await self._pushes.get()
            self._busy += 1
            try:
                await self._handle_push(frame)
                if self._pushes.empty() or len(self._acks) >= ACK_BATCH:
                    if self._pushes.empty() and self.ack_delay:
                        await asyncio.sleep(self.ack_delay)
                    await self._ack_when_due()
                    await self.flush_receipts()
            except ClientError as exc:
                log.warning("processing a push failed: %s", exc)
            except Exception:
                log.exception("processing a push failed")
            finally:
                self._busy -= 1
                self._idle.set()

    async def wait_idle(self, timeout: float) -> None:
        """Wait until everything queued on the server was received and acknowledged."""

        async def idle() -> None:
            await self._drained.wait()
            while (
                self._busy
                or not self._pushes.empty()
                or self._acks
                or self._store.pending_receipts()
            ):
                self._idle.clear()
                await self._idle.wait()
            for task in self._background.tasks():
                await asyncio.gather(task, return_exceptions=True)

        async with asyncio.timeout(timeout):
            await idle()

    def forget_presence(self, numbers: list[str]) -> None:
        """Report these numbers' next presence push even if it shows no change."""
        for number in numbers:
            self._presence.pop(number, None)

    def _ack_wait(self) -> float:
        """Seconds until the current connection may get its next `ack`; 0 for now."""
        if self._link.conn is not self._acked_conn:
            return 0.0
        return max(0.0, self._acked_at + ACK_INTERVAL - time.monotonic())

    async def _ack_when_due(self) -> None:
        """Flush the acks now if due or ACK_BATCH are waiting, else once the interval ends."""
        if not self._acks:
            return
        wait = self._ack_wait()
        if len(self._acks) >= ACK_BATCH or wait <= 0:
            await self.flush_acks()
        elif not self._ack_timer_pending:
            self._ack_timer_pending = True
            self._background.spawn(self._flush_acks_after(wait))

    async def _flush_acks_after(self, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            self._ack_timer_pending = False
        await self._ack_when_due()  # not due yet if ACK_BATCH went out meanwhile: wait again
        self._idle.set()

    async def _flush_acks_later(self) -> None:
        await asyncio.sleep(ACK_RETRY_SECONDS)
        self._ack_retry_pending = False
        await self.flush_acks()
        self._idle.set()

    async def flush_acks(self) -> None:
        """Acknowledge the processed envelopes on the current connection, if any."""
        if not self._acks:
            return
        eids, self._acks = self._acks, []
        conn = self._link.conn
        if conn is None:
            return  # redelivered on reconnect, then recognised as seen
        self._acked_conn, self._acked_at = conn, time.monotonic()
        try:
            await conn.request(Ack(id=next_request_id(), eids=eids))
        except ServerError as exc:
            if exc.code in TRANSIENT:  # the server's database is away: ack again shortly
                self._acks = eids + self._acks
                if not self._ack_retry_pending:
                    self._ack_retry_pending = True
                    self._background.spawn(self._flush_acks_later())
            elif exc.code != ErrorCode.UNKNOWN_ENVELOPE:
                log.warning("ack failed: %s", exc)
        except ConnectionLost:
            pass

    async def flush_receipts(self) -> None:
        """Queue delivered receipts; they were stored with their messages, before the ack."""
        async with self._receipts_lock:  # one flush at a time: each receipt is queued once
            for (peer, group), ids in self._store.pending_receipts().items():
                content = encode_content(Receipt(status="delivered", ids=ids, group=group))
                try:
                    entry = await self._outbox.queue(
                        peer, secrets.token_bytes(16), content, done_receipts=ids
                    )
                except ClientError as exc:
                    log.warning("delivered receipt not sent yet: %s", exc)
                    continue
                self._background.spawn(self._outbox.transmit(entry))

    async def _handle_push(self, frame: ServerFrame) -> None:
        match frame:
            case Envelope():
                await self._on_envelope(frame)
            case Drained():
                self._drained.set()
            case KeysLow():
                conn = self._link.conn
                if conn is not None:
                    await self._keys.top_up(conn, frame.remaining)
            case Presence():
                # while online, last seen does not matter: online again is no change
                state = (frame.online, None if frame.online else frame.last_seen)
                if self._presence.get(frame.number) != state:  # not a renewed watch's answer
                    self._presence[frame.number] = state
                    self._events.put_nowait(
                        PresenceChanged(frame.number, frame.online, frame.last_seen)
                    )
            case _:
                log.debug("unhandled push %s", type(frame).__name__)

    async def _on_envelope(self, env: Envelope) -> None:
        digest = hashlib.sha256(env.body).digest()
        if env.eid and self._store.seen(digest):
            self._acks.append(env.eid)  # processed before a crash or lost ack
            return
        if env.type in GROUP_TYPES and env.group:
            self._done(env, await self._groups.receive(env, lambda: self._mark_seen(env, digest)))
            return
        device = await self._contacts.sender_device(env.sender, env.sender_device)
        if device is None:
            self._reject(env, digest, "the sender's device is unknown or not signed")
            return
        async with self._keys.lock:
            try:
                plaintext = self._keys.decrypt(device.identity_key, env.type, env.body)
            except (DecryptionFailed, CryptoError) as exc:
                self._reject(env, digest, f"cannot decrypt: {exc}")
                return
            content: Content | Unknown | None
            problem = ""
            try:
                content = decode_content(plaintext)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                content = decode_unknown(plaintext)
                problem = f"unreadable content: {exc}"
            with self._store.transaction():
                self._keys.persist()  # the session moved on, whatever the content
                events: list[Event] = []
                if content is None:
                    events = [DecryptionError(env.sender, env.sender_device, problem)]
                elif isinstance(content, Unknown):
                    events = self._apply_unknown(env, content)
                else:
                    events = self._apply(env, device, content)
                self._mark_seen(env, digest)
        self._done(env, events)

    def _mark_seen(self, env: Envelope, digest: bytes) -> None:
        """Record a stored envelope as processed (inside the transaction of its effects)."""
        if env.eid:
            self._store.add_seen(digest, self._clock.now_ms())

    def _done(self, env: Envelope, events: list[Event]) -> None:
        """An envelope's effects are stored: acknowledge it and report its events."""
        if env.eid:
            self._acks.append(env.eid)
        for event in events:
            self._events.put_nowait(event)

    def _reject(self, env: Envelope, digest: bytes, reason: str) -> None:
        if env.eid:
            self._store.add_seen(digest, self._clock.now_ms())
            self._acks.append(env.eid)
        self._events.put_nowait(DecryptionError(env.sender, env.sender_device, reason))

    def _apply_unknown(self, env: Envelope, content: Unknown) -> list[Event]:
        """A newer client's kind of message: keep a placeholder and acknowledge it."""
        if content.id is None:
            return []  # a signal of a newer kind (like typing): nothing to show
        body = f"[a {content.type} message this version cannot show: update plauder]"
        return self._received(env, content.id, body, content.ts or env.ts)

    def _received(
        self, env: Envelope, mid: str, body: str, ts: int, media: Media | None = None
    ) -> list[Event]:
        """Store a text or file from a contact; an event unless it was here already."""
        added = self._store.add_message(
            id=mid,
            chat=env.sender,
            outgoing=False,
            sender=env.sender,
            body=body,
            ts=ts,
            server_ts=env.ts,
            status="received",
        )
        if not added:
            return []
        self._store.add_pending_receipt(env.sender, mid)
        attachment = None
        if media is not None:
            self._store.put_media(env.sender, mid, media)
            attachment = self._attach(env.sender, mid, media)
        return [MessageReceived(mid, env.sender, body, ts, env.ts, media=attachment)]

    def _apply(self, env: Envelope, device: DeviceKeys, content: Content) -> list[Event]:
        match content:
            case Text():
                return self._received(env, content.id, content.body, content.ts)
            case Media():
                return self._received(env, content.id, content.caption, content.ts, content)
            case Receipt() if content.group:
                return self._groups.apply_receipt(env.sender, content)
            case Receipt():
                moved = self._store.set_status(self._number, list(content.ids), content.status)
                if not moved:
                    return []
                return [ReceiptReceived(env.sender, content.status, tuple(moved))]
            case Typing():
                return [TypingChanged(env.sender, content.active)]
            case GroupKey():
                return self._groups.apply_key(env.sender, device, content)
            case (
                CallOffer()
                | CallRinging()
                | CallAnswer()
                | CallSelect()
                | CallReject()
                | CallHangup()
            ):
                self._calls(env.sender, env.sender_device, env.ts, content)  # no row, no receipt
        return []
