"""Sending: encrypt, queue with the local writes, transmit until stored, settle the outcome."""

import asyncio
import secrets
from collections.abc import Callable

import msgspec

from plauder.client.connection import next_request_id
from plauder.client.contacts import Contacts
from plauder.client.errors import (
    TRANSIENT,
    ClientError,
    Queued,
    ServerError,
    UnknownContact,
    UntrustedDevices,
)
from plauder.client.group_sender import GroupSender
from plauder.client.group_store import is_group_chat
from plauder.client.keys import Keys
from plauder.client.link import Link
from plauder.client.profile import Profile
from plauder.client.store import OutboxEntry
from plauder.client.tasks import Background
from plauder.clock import Clock
from plauder.protocol import codec
from plauder.protocol.content import Media, encode_content
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import OutEnvelope, Send, Sent

RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 8.0


class Outbox:
    """Sends stay in the store's outbox until the server stored them or refused them for good.

    A lost connection never fails a send: it stays queued and goes out again
    after the next authentication (`resume`); the server deduplicates by cmid.
    """

    def __init__(
        self,
        profile: Profile,
        keys: Keys,
        contacts: Contacts,
        link: Link,
        clock: Clock,
        background: Background,
        group_sender: GroupSender,
    ) -> None:
        self._number = profile.number
        self._store = profile.store
        self._keys = keys
        self._contacts = contacts
        self._link = link
        self._clock = clock
        self._background = background
        self._group_sender = group_sender
        self._waiters: dict[bytes, asyncio.Future[Sent]] = {}
        self._delays: dict[bytes, float] = {}  # next retry delay of sends the server put off

    async def queue(
        self,
        peer: str,
        cmid: bytes,
        content: bytes,
        message: tuple[str, str, int] | None = None,
        done_receipts: list[str] | None = None,
        media: Media | None = None,
        also: Callable[[], None] | None = None,
    ) -> OutboxEntry:
        """Encrypt for the peer's devices and store the send with the writes that go with it.

        The sessions, the outbox entry, the pending message (id, text, ts), its
        file's description, the receipts it carries and the writes of `also`
        land in one transaction, before anything is sent.
        """
        async with self._keys.lock:
            envelopes = await self._encrypt(peer, content, refresh=False)
            frame = Send(id=0, cmid=cmid, envelopes=envelopes)
            entry = OutboxEntry(cmid, peer, content, codec.encode(frame))
            with self._store.transaction():
                self._keys.persist()
                self._store.put_outbox(entry, self._clock.now_ms())
                if done_receipts:
                    self._store.clear_pending_receipts(peer, done_receipts)
                self._add_pending(peer, message, media)
                if also is not None:
                    also()
        return entry

    def queue_group(
        self,
        gid: str,
        cmid: bytes,
        content: bytes,
        message: tuple[str, str, int] | None,
        media: Media | None = None,
        also: Callable[[], None] | None = None,
    ) -> OutboxEntry:
        """Store a group send (and its pending message); it is encrypted when transmitted.

        Encryption waits until then because it needs the group's devices as the
        server knows them at that moment.
        """
        entry = OutboxEntry(cmid, gid, content, b"")
        with self._store.transaction():
            self._store.put_outbox(entry, self._clock.now_ms())
            self._add_pending(gid, message, media)
            if also is not None:
                also()
        return entry

    async def queue_media(
        self, chat: str, is_group: bool, media: Media, also: Callable[[], None]
    ) -> OutboxEntry:
        """Queue the message of an uploaded file for a contact or a group, `also` with it."""
        cmid = bytes.fromhex(media.id)
        message = (media.id, media.caption, media.ts)
        content = encode_content(media)
        if is_group:
            return self.queue_group(chat, cmid, content, message, media, also)
        return await self.queue(chat, cmid, content, message=message, media=media, also=also)

    def _add_pending(
        self, chat: str, message: tuple[str, str, int] | None, media: Media | None = None
    ) -> None:
        if message is not None:
            mid, text, ts = message
            self._store.add_message(
                id=mid,
                chat=chat,
                outgoing=True,
                sender=self._number,
                body=text,
                ts=ts,
                server_ts=None,
                status="pending",
            )
            if media is not None:
                self._store.put_media(self._number, mid, media)

    async def await_sent(self, entry: OutboxEntry, timeout: float) -> Sent:
        """Transmit a queued send; wait until the server stored it (Queued if not in time)."""
        fut = self._waiters.get(entry.cmid)
        if fut is None:
            fut = self._waiters[entry.cmid] = asyncio.get_running_loop().create_future()
        self._background.spawn(self.transmit(entry))
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError as exc:
            raise Queued(entry.cmid.hex(), "the server did not confirm in time") from exc
        finally:
            if fut.done():
                self._waiters.pop(entry.cmid, None)

    def resume(self) -> None:
        """Transmit everything still queued (after a new authentication)."""
        for entry in self._store.outbox():
            self._background.spawn(self.transmit(entry))

    async def send_now(self, peer: str, content: bytes) -> None:
        """Encrypt and send to the peer's online devices only; never queued or stored."""
        async with self._keys.lock:
            envelopes = await self._encrypt(peer, content, False)
            with self._store.transaction():
                self._keys.persist()
        frame = Send(
            id=next_request_id(),
            cmid=secrets.token_bytes(16),
            envelopes=envelopes,
            ephemeral=True,
        )
        await self._link.request(frame)

    async def transmit(self, entry: OutboxEntry) -> None:
        """Send an outbox entry until the server stores it; re-encrypt if devices changed."""
        try:
            if is_group_chat(entry.chat):
                sent = await self._group_sender.transmit(entry)
                if sent is None:
                    return  # another transmission of it finished first
                answer = sent
            else:
                answer = await self._transmit_once(entry)
        except (UnknownContact, UntrustedDevices) as exc:
            self._fail(entry, exc)
        except ServerError as exc:
            if exc.code in TRANSIENT:
                self._retry_later(entry)  # transient: stays in the outbox, tried again
                return
            self._fail(entry, exc)
        except ClientError:
            return  # not connected, or this connection gave way: stays in the outbox
        else:
            self._sent(entry, answer)

    def _retry_later(self, entry: OutboxEntry) -> None:
        """Transmit again after a growing delay (the server's database may be back by then)."""
        delay = self._delays.get(entry.cmid, RETRY_FIRST_SECONDS)
        self._delays[entry.cmid] = min(delay * 2, RETRY_MAX_SECONDS)
        self._background.spawn(self._transmit_after(entry, delay))

    async def _transmit_after(self, entry: OutboxEntry, delay: float) -> None:
        await asyncio.sleep(delay)
        if any(e.cmid == entry.cmid for e in self._store.outbox()):
            await self.transmit(entry)

    async def _transmit_once(self, entry: OutboxEntry) -> Sent:
        frame = msgspec.msgpack.decode(entry.frame, type=Send)
        for _ in range(2):
            try:
                answer = await self._link.request(
                    msgspec.structs.replace(frame, id=next_request_id())
                )
            except ServerError as exc:
                if exc.code != ErrorCode.MISMATCHED_DEVICES:
                    raise
                async with self._keys.lock:  # the device list changed: encrypt again
                    envelopes = await self._encrypt(entry.chat, entry.content, refresh=True)
                    frame = Send(id=0, cmid=entry.cmid, envelopes=envelopes)
                    entry = OutboxEntry(entry.cmid, entry.chat, entry.content, codec.encode(frame))
                    with self._store.transaction():
                        self._keys.persist()
                        self._store.put_outbox(entry, self._clock.now_ms())
                continue
            assert isinstance(answer, Sent)
            return answer
        answer = await self._link.request(msgspec.structs.replace(frame, id=next_request_id()))
        assert isinstance(answer, Sent)
        return answer

    async def _encrypt(self, number: str, plaintext: bytes, refresh: bool) -> list[OutEnvelope]:
        """One ciphertext per device of the number, starting sessions where needed."""
        devices = [] if refresh else self._store.devices(number)
        if not devices:
            await self._contacts.fetch(number, claim=False)
            devices = self._store.devices(number)
        missing = self._keys.without_session(devices)
        if missing:
            answer = await self._contacts.fetch(number, claim=True)
            devices = self._store.devices(number)
            self._keys.start_sessions(answer.devices, {d.identity_key for d in missing})
        return self._keys.encrypt(number, devices, plaintext)

    def _sent(self, entry: OutboxEntry, answer: Sent) -> None:
        self._delays.pop(entry.cmid, None)
        with self._store.transaction():
            self._store.remove_outbox(entry.cmid)
            mid = entry.cmid.hex()
            self._store.set_server_ts(self._number, mid, answer.ts)
            self._store.set_status(self._number, [mid], "sent")
        fut = self._waiters.get(entry.cmid)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    def _fail(self, entry: OutboxEntry, exc: ClientError) -> None:
        self._delays.pop(entry.cmid, None)
        with self._store.transaction():
            self._store.remove_outbox(entry.cmid)
            self._store.mark_failed(self._number, entry.cmid.hex())
        fut = self._waiters.get(entry.cmid)
        if fut is not None and not fut.done():
            fut.set_exception(exc)
