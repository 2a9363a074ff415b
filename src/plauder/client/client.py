"""The async SDK's entry point: `Client` wires the parts below and offers the public API.

The parts, each built once here and handed what it needs:

- `Profile` (profile.py): number, servers, device id and account key from the store;
- `Keys` (keys.py): this device's Olm account and sessions;
- `Link` (link.py): the authenticated connection, reconnecting, retrying requests;
- `Contacts` (contacts.py): contacts' verified device lists, trust on first use;
- `Outbox` (outbox.py): encrypting, queueing and transmitting sends;
- `Inbox` (inbox.py): processing pushes, storing messages, acknowledging them;
- `Groups` (groups.py, with group_*.py): end-to-end encrypted groups;
- `MediaService` (media.py, media_transfer.py): files, photos and voice notes;
- `Calls` (calls.py, call_media.py, call_audio.py, call_log.py): voice calls.
"""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from plauder.client.call_audio import AudioSink, AudioSource
from plauder.client.call_log import CallLog
from plauder.client.calls import (
    RING_SECONDS,
    SETUP_SECONDS,
    Call,
    CallParts,
    Calls,
    CallSettings,
    IncomingHandler,
)
from plauder.client.chat import Chat, ChatParts
from plauder.client.connection import next_request_id
from plauder.client.contacts import Contacts
from plauder.client.contacts import normalize as _normalize
from plauder.client.errors import ClientError, NotRegistered
from plauder.client.events import Event, IdentityChanged
from plauder.client.group_book import GroupBook
from plauder.client.group_inbox import GroupInbox
from plauder.client.group_keys import GroupKeys
from plauder.client.group_sender import GroupSender
from plauder.client.group_store import GroupStore
from plauder.client.groups import GroupParts, Groups
from plauder.client.inbox import Inbox
from plauder.client.keyfile import open_cipher
from plauder.client.keys import ONE_TIME_KEYS, Keys
from plauder.client.link import Link
from plauder.client.media import Attachment, MediaFileError, MediaService
from plauder.client.media_transfer import MediaTransfer, Progress
from plauder.client.outbox import Outbox
from plauder.client.profile import Profile
from plauder.client.servers import ServerOrder
from plauder.client.store import HistoryEntry, LocalStore, MediaJob, OutboxEntry
from plauder.client.tasks import Background
from plauder.clock import Clock, SystemClock
from plauder.crypto import (
    AccountKey,
    Device,
    format_safety_number,
    safety_number,
    safety_qr_payload,
)
from plauder.protocol.content import Media, Receipt, Typing, encode_content
from plauder.protocol.frames import (
    ClientFrame,
    Registered,
    RequestCode,
    ServerFrame,
    SetPrivacy,
    Verify,
    WatchPresence,
)


class Client:
    """One device of one account, with its local store in a profile folder.

    The profile lists one or more server URLs, all leading to one plauder
    service (nodes sharing a database, or one server under several addresses).
    The client tries them in turn: the one that worked last first, the others
    in an order drawn per client (`shuffle_servers=False`: the listed order).
    `server_timeout` bounds each attempt, `connect_timeout` how long a call
    waits for a connection on any of them.

    A voice call rings for `ring_timeout` seconds before it is missed, and its
    media must connect within `call_setup_timeout` seconds of the answer.
    """

    def __init__(
        self,
        profile_dir: Path,
        number: str,
        *,
        passphrase: str | None = None,
        clock: Clock | None = None,
        ack_delay: float = 0.0,
        connect_timeout: float = 30.0,
        server_timeout: float = 10.0,
        shuffle_servers: bool = True,
        ring_timeout: float = RING_SECONDS,
        call_setup_timeout: float = SETUP_SECONDS,
    ) -> None:
        self.number = _normalize(number)
        self.profile_dir = profile_dir
        self.clock = clock or SystemClock()
        self.store = LocalStore(profile_dir / "store.db", open_cipher(profile_dir, passphrase))
        self.store.prune_seen(self.clock.now_ms())
        self._profile = Profile(self.number, self.store)
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        pushes: asyncio.Queue[ServerFrame] = asyncio.Queue()
        background = Background()
        self._background = background
        self._keys = Keys(self.store)
        self._link = Link(
            self._profile,
            self._keys,
            on_push=pushes.put_nowait,
            on_connected=self._on_connected,
            connect_timeout=connect_timeout,
            server_timeout=server_timeout,
            order=ServerOrder(shuffle_servers),
        )
        self._contacts = Contacts(self._profile, self._link, self.clock, self._events)
        self._contacts.on_identity_changed(self._identity_changed)
        group_store = GroupStore(self.store)
        group_keys = GroupKeys(self._keys, group_store, self.store.cipher.pickle_key)
        self._book = GroupBook(self.number, self.store, group_store)
        sender = GroupSender(
            self._profile,
            self._keys,
            group_keys,
            group_store,
            self._contacts,
            self._link,
            self.clock,
        )
        self._outbox = Outbox(
            self._profile, self._keys, self._contacts, self._link, self.clock, background, sender
        )
        self.media = MediaService(
            self.number, self.store, MediaTransfer(self._link), profile_dir / "media", self.clock
        )
        """Uploads and downloads of files, and where downloads go by default."""
        self.calls = Calls(
            CallParts(
                self.number,
                lambda: self._profile.device_id,
                self._outbox,
                self._link,
                self.clock,
                CallLog(self.store),
                self._events,
                CallSettings(ring_timeout=ring_timeout, setup_timeout=call_setup_timeout),
            )
        )
        """Voice calls: the one in progress, the call log."""
        self._inbox = Inbox(
            self._profile,
            self._keys,
            self._contacts,
            self._link,
            self._outbox,
            self.clock,
            background,
            pushes=pushes,
            events=self._events,
            ack_delay=ack_delay,
            groups=GroupInbox(
                self._profile,
                self._keys,
                group_keys,
                self._book,
                self._contacts,
                self._link,
                welcome=self._welcome_joiner,
                attach=self.media.attachment,
            ),
            group_keys=group_keys,
            attach=self.media.attachment,
            calls=self.calls.receive,
        )
        self.groups = Groups(
            GroupParts(
                self.number,
                self.store,
                self._book,
                self._link,
                self._outbox,
                self.clock,
                self.media,
            )
        )
        """The account's end-to-end encrypted groups."""
        self._chat_parts = ChatParts(self.store, self._outbox, self.media, self.clock)
        self._runner: asyncio.Task[None] | None = None
        self._processor: asyncio.Task[None] | None = None
        self._closed = False
        self._watching: list[str] = []

    # --- profile -------------------------------------------------------------------------

    @property
    def servers(self) -> list[str]:
        """The server URLs of this profile, as stored."""
        return self._profile.servers

    def set_servers(self, servers: Sequence[str]) -> list[str]:
        """Store a new list of server URLs (items may be comma separated); returns it.

        A running client uses the new list from its next connection attempt on.
        Raises BadServerUrl for a malformed URL or an empty list.
        """
        return self._profile.set_servers(servers)

    @property
    def server(self) -> str | None:
        """The URL of the server this device is connected to now, if any."""
        return self._link.server

    @property
    def last_server(self) -> str | None:
        """The URL that accepted this device last; it is tried first next time."""
        return self._profile.last_server

    @property
    def device_id(self) -> int | None:
        """This device's id, once registered."""
        return self._profile.device_id

    @property
    def registered(self) -> bool:
        """Whether registration finished."""
        return self._profile.registered

    @property
    def account_key(self) -> AccountKey:
        """The account's identity key."""
        return self._profile.account_key

    @property
    def ack_delay(self) -> float:
        """Seconds to wait, once caught up, before acknowledging what was received."""
        return self._inbox.ack_delay

    @ack_delay.setter
    def ack_delay(self, value: float) -> None:
        self._inbox.ack_delay = value

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for a connection before raising NotConnected."""
        return self._link.connect_timeout

    @connect_timeout.setter
    def connect_timeout(self, value: float) -> None:
        self._link.connect_timeout = value

    # --- registration --------------------------------------------------------------------

    async def request_code(self, servers: Sequence[str]) -> None:
        """Store the server URLs and ask one of them to send a verification code to this number."""
        self._profile.set_servers(servers)
        async with self._link.plain() as conn:
            await conn.request(RequestCode(id=next_request_id(), number=self.number))

    async def verify(self, code: str) -> int:
        """Prove the code, create this device's keys and register them; returns the device id."""
        account = AccountKey.generate()
        device = Device.create()
        otks = device.new_one_time_keys(ONE_TIME_KEYS)
        fallback = device.new_fallback_key()
        keys = account.sign_device(device.identity_key, device.signing_key, 1)
        frame = Verify(
            id=next_request_id(),
            number=self.number,
            code=code.strip(),
            account_key=account.public_key,
            device=keys,
            one_time_keys=otks,
            fallback_key=fallback,
        )
        async with self._link.plain() as conn:
            answer = await conn.request(frame)
        assert isinstance(answer, Registered)
        with self.store.transaction():
            self.store.put_secret("account_key", account.private_bytes())
            self._keys.adopt(device)
            self.store.put_setting("device_id", str(answer.device_id))
            self.store.set_contact_key(self.number, account.public_key, self.clock.now_ms())
        return answer.device_id

    # --- connection lifecycle ------------------------------------------------------------

    async def start(
        self, *, receive: bool = True, wait: bool = True, servers: Sequence[str] | None = None
    ) -> None:
        """Connect in the background (reconnecting as needed); wait for the first auth.

        `servers`, if given, replaces the profile's list of server URLs first.
        """
        if not self.registered:
            raise NotRegistered("this profile is not registered: register and verify first")
        if servers is not None:
            self._profile.set_servers(servers)
        self._keys.load()
        self._link.open(receive)
        self._runner = asyncio.get_running_loop().create_task(self._link.run())
        self._processor = asyncio.get_running_loop().create_task(self._inbox.run())
        if wait:
            await self.wait_connected()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the device is authenticated on some server."""
        await self._link.wait_connected(timeout)

    async def close(self) -> None:
        """Flush acknowledgements (briefly), then disconnect and close the store."""
        if self._closed:
            return
        self._closed = True
        await self.calls.close()  # tells the other side, while the link is still up
        with contextlib.suppress(ClientError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._inbox.flush_acks()
        self._link.stop()
        tasks = [t for t in (self._runner, self._processor) if t is not None]
        tasks += self._background.tasks()
        for task in tasks:
            task.cancel()
        await self._link.disconnect()  # at most five seconds
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._link.close_session()
        self.store.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_connected(self) -> None:
        """After each authentication: the outbox, queued files, delivered receipts, presence."""
        self._outbox.resume()
        self._background.spawn(self.media.resume(self._post_file))
        if self._link.receive:
            self._background.spawn(self._inbox.flush_receipts())
        if self._watching:  # a new connection, maybe to another node, watches nothing yet
            self._background.spawn(self._watch_again())

    async def _post_file(self, job: MediaJob, media: Media, also: Callable[[], None]) -> None:
        """Queue and transmit the message of a file queued earlier, now uploaded."""
        entry = await self._outbox.queue_media(job.chat, job.is_group, media, also)
        self._background.spawn(self._outbox.transmit(entry))

    def _identity_changed(self, change: IdentityChanged) -> None:
        """A member's safety number changed: say so in each group we share with them."""
        for event in self._book.identity_changed(change, self.clock.now_ms()):
            self._events.put_nowait(event)

    def _welcome_joiner(self, gid: str) -> None:
        """Send a group's name and description to whoever joined it by link, on the side."""

        async def welcome() -> None:
            with contextlib.suppress(ClientError):  # stays queued if the link is down
                await self.groups.get(gid).resend_info()

        self._background.spawn(welcome())

    async def _watch_again(self) -> None:
        with contextlib.suppress(ClientError):
            await self._request(WatchPresence(id=next_request_id(), numbers=self._watching))

    async def _request(self, frame: ClientFrame) -> ServerFrame:
        """Send a request on the current connection, riding out reconnects."""
        return await self._link.request(frame)

    async def _queue(
        self,
        peer: str,
        cmid: bytes,
        content: bytes,
        message: tuple[str, str, int] | None = None,
        done_receipts: list[str] | None = None,
    ) -> OutboxEntry:
        """Encrypt and store a send in the outbox without transmitting it."""
        return await self._outbox.queue(peer, cmid, content, message, done_receipts)

    # --- sending -------------------------------------------------------------------------

    def chat(self, number: str) -> Chat:
        """The conversation with a contact: send texts, files and voice notes to them."""
        return Chat(self._chat_parts, _normalize(number))

    async def send_text(self, number: str, text: str, *, timeout: float = 60.0) -> str:
        """Encrypt and send a text; returns its message id once the server stored it."""
        return await self.chat(number).send_text(text, timeout=timeout)

    async def send_file(
        self,
        number: str,
        path: Path | str,
        *,
        caption: str = "",
        keep_metadata: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """Encrypt, upload and send a file, photo or video; returns its message id."""
        return await self.chat(number).send_file(
            path, caption=caption, keep_metadata=keep_metadata, progress=progress
        )

    async def send_voice(
        self,
        number: str,
        path: Path | str,
        *,
        low_data: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """Send any audio file as an Opus voice note; returns its message id."""
        return await self.chat(number).send_voice(path, low_data=low_data, progress=progress)

    def find_media(self, message_id: str) -> list[Attachment]:
        """The files of the messages whose id starts with `message_id`, sent or received."""
        return [
            self.media.attachment(sender, content.id, content)
            for sender, content, _ in self.store.media(message_id)
        ]

    def media_of(self, message_id: str) -> Attachment:
        """The file of the one message whose id starts with `message_id`.

        Raises MediaFileError when no message with a file, or several, match.
        """
        found = self.find_media(message_id)
        if len(found) != 1:
            what = (
                "no message with a file matches"
                if not found
                else f"{len(found)} messages with a file match"
            )
            raise MediaFileError(f"{what} {message_id!r}: see `history`")
        return found[0]

    async def download(
        self,
        message_id: str,
        to: Path | str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Fetch, decrypt and verify a message's file; returns where it was saved.

        `message_id` may be a unique prefix. Raises MediaFileError when no
        message or several match.
        """
        return await self.media_of(message_id).download(to, progress)

    async def mark_read(self, number: str) -> list[str]:
        """Mark a chat's received messages read and tell the sender; returns their ids."""
        peer = _normalize(number)
        ids = self.store.unread(peer)
        if not ids:
            return []
        with self.store.transaction():
            self.store.set_status(peer, ids, "read")
        entry = await self._outbox.queue(
            peer, secrets.token_bytes(16), encode_content(Receipt(status="read", ids=ids))
        )
        await self._outbox.await_sent(entry, 60.0)
        return ids

    async def send_typing(self, number: str, active: bool = True) -> None:
        """Tell a contact's online devices that we are typing (never stored)."""
        peer = _normalize(number)
        await self._outbox.send_now(peer, encode_content(Typing(active=active)))

    async def set_presence_visible(self, visible: bool) -> None:
        """Let everyone, or nobody, see when this account is online and was last seen."""
        await self._request(
            SetPrivacy(id=next_request_id(), last_seen="everyone" if visible else "nobody")
        )

    async def watch_presence(self, numbers: list[str]) -> None:
        """Receive PresenceChanged events for these contacts: their state now, then changes.

        The watch is renewed on every new connection; a renewal repeats no event.
        """
        wanted = [_normalize(n) for n in numbers]
        self._watching = wanted
        self._inbox.forget_presence(wanted)
        await self._request(WatchPresence(id=next_request_id(), numbers=wanted))

    # --- calls ---------------------------------------------------------------------------

    async def call(
        self,
        number: str,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        *,
        low_data: bool = False,
        relay_only: bool = False,
    ) -> Call:
        """Ring a contact's devices; returns the call once the server took the offer.

        Sound comes from `source` and goes to `sink` (call_audio.py: a file,
        a tone, memory, a WAV file; by default the microphone and speaker, if
        any). `low_data` caps Opus at 12 kbit/s for both directions;
        `relay_only` sends the media through the server's TURN relay only.
        Follow the call with `call.wait_state(...)` or CallStateChanged events.
        """
        return await self.calls.call(
            _normalize(number), source, sink, low_data=low_data, relay_only=relay_only
        )

    def on_incoming_call(self, handler: IncomingHandler) -> None:
        """Run `handler(call)` for every call that rings here (IncomingCall events say it too)."""
        self.calls.on_incoming(handler)

    # --- receiving -----------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Events as they arrive, for ever."""
        while True:
            yield await self._events.get()

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event, or TimeoutError."""
        async with asyncio.timeout(timeout):
            return await self._events.get()

    def pending_events(self) -> list[Event]:
        """Events that arrived and were not taken yet."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until everything queued on the server was received and acknowledged."""
        await self._inbox.wait_idle(timeout)

    async def wait_sent(self, timeout: float = 30.0) -> None:
        """Wait until every queued message and file is stored on the server (or TimeoutError)."""
        async with asyncio.timeout(timeout):
            # the store is the one place that knows: sends and uploads end in several modules
            while self.store.queued():  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    # --- local views ---------------------------------------------------------------------

    def history(self, number: str, limit: int = 50) -> list[HistoryEntry]:
        """The last messages of a chat, oldest first."""
        return self.store.history(_normalize(number), limit)

    async def safety_number(self, number: str) -> tuple[str, str]:
        """The formatted safety number with a contact and the payload for its QR code."""
        peer = _normalize(number)
        key = await self._contacts.account_key(peer)
        own = self.account_key.public_key
        digits = safety_number(self.number, own, peer, key)
        return format_safety_number(digits), safety_qr_payload(self.number, own, peer, key)
