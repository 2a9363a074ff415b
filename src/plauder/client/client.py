"""The async SDK: register, connect, encrypt, send, receive, acknowledge, reconnect."""

import asyncio
import contextlib
import hashlib
import logging
import random
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from plauder import phone
from plauder.client.connection import Connection, next_request_id
from plauder.client.errors import (
    ClientError,
    ConnectionLost,
    NotConnected,
    NotRegistered,
    ServerError,
    UnknownContact,
    UntrustedDevices,
)
from plauder.client.events import (
    DecryptionError,
    Event,
    IdentityChanged,
    MessageReceived,
    PresenceChanged,
    ReceiptReceived,
    TypingChanged,
)
from plauder.client.keyfile import open_cipher
from plauder.client.store import HistoryEntry, LocalStore, OutboxEntry
from plauder.clock import Clock, SystemClock
from plauder.crypto import (
    AccountKey,
    CryptoError,
    DecryptionFailed,
    Device,
    OlmSessions,
    UntrustedDevice,
    auth_payload,
    format_safety_number,
    safety_number,
    safety_qr_payload,
    verify_device,
)
from plauder.protocol import codec
from plauder.protocol.content import (
    Content,
    Receipt,
    Text,
    Typing,
    decode_content,
    encode_content,
)
from plauder.protocol.errors import CloseCode, ErrorCode
from plauder.protocol.frames import (
    Ack,
    Auth,
    AuthOk,
    DeviceKeys,
    Devices,
    Drained,
    Envelope,
    GetDevices,
    KeysLow,
    OutEnvelope,
    Presence,
    Registered,
    RequestCode,
    Send,
    Sent,
    ServerFrame,
    SetPrivacy,
    UploadKeys,
    Verify,
    WatchPresence,
)

log = logging.getLogger(__name__)

ONE_TIME_KEYS = 40  # below vodozemac's 50 private one-time keys, with room for claimed ones
ACK_BATCH = 100


class Client:
    """One device of one account, with its local store in a profile folder."""

    def __init__(
        self,
        profile_dir: Path,
        number: str,
        *,
        passphrase: str | None = None,
        clock: Clock | None = None,
        ack_delay: float = 0.0,
        connect_timeout: float = 30.0,
    ) -> None:
        try:
            self.number = phone.normalize(number)
        except ValueError as exc:
            raise ClientError(f"{number}: {exc}") from exc
        self.profile_dir = profile_dir
        self.clock = clock or SystemClock()
        self.store = LocalStore(profile_dir / "store.db", open_cipher(profile_dir, passphrase))
        self.store.prune_seen(self.clock.now_ms())
        self.ack_delay = ack_delay
        self.connect_timeout = connect_timeout
        self._device: Device | None = None
        self._sessions: OlmSessions | None = None
        self._loaded_peers: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._conn: Connection | None = None
        self._connected = asyncio.Event()
        self._fatal: ClientError | None = None
        self._runner: asyncio.Task[None] | None = None
        self._processor: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[ServerFrame] = asyncio.Queue()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._drained = asyncio.Event()
        self._busy = 0
        self._idle = asyncio.Event()
        self._acks: list[int] = []
        self._waiters: dict[bytes, asyncio.Future[Sent]] = {}
        self._crypto_lock = asyncio.Lock()
        self._closing = False
        self._closed = False
        self._receive = True
        self._server_keys = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # --- profile -------------------------------------------------------------------------

    @property
    def servers(self) -> list[str]:
        """The server URLs of this profile, in the order they are tried."""
        value = self.store.get_setting("servers")
        return value.split() if value else []

    @property
    def device_id(self) -> int | None:
        """This device's id, once registered."""
        value = self.store.get_setting("device_id")
        return int(value) if value else None

    @property
    def registered(self) -> bool:
        """Whether registration finished."""
        return self.device_id is not None

    @property
    def account_key(self) -> AccountKey:
        """The account's identity key."""
        raw = self.store.get_secret("account_key")
        if raw is None:
            raise NotRegistered("no account key yet: register and verify first")
        return AccountKey.from_private_bytes(raw)

    def _load_device(self) -> Device:
        if self._device is None:
            pickle = self.store.get_secret("device")
            if pickle is None:
                raise NotRegistered("this profile is not registered: register and verify first")
            self._device = Device.from_pickle(pickle.decode(), self.store.cipher.pickle_key)
            self._sessions = OlmSessions(self._device)
        return self._device

    def _olm(self) -> OlmSessions:
        self._load_device()
        assert self._sessions is not None
        return self._sessions

    def _save_device(self) -> None:
        device = self._load_device()
        self.store.put_secret("device", device.pickle(self.store.cipher.pickle_key).encode())

    # --- registration --------------------------------------------------------------------

    async def request_code(self, servers: list[str]) -> None:
        """Ask the server to send a verification code to this number."""
        if not servers:
            raise ClientError("give at least one server URL")
        self.store.put_setting("servers", " ".join(servers))
        async with self._plain_connection() as conn:
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
        async with self._plain_connection() as conn:
            answer = await conn.request(frame)
        assert isinstance(answer, Registered)
        with self.store.transaction():
            self.store.put_secret("account_key", account.private_bytes())
            self._device = device
            self._sessions = OlmSessions(device)
            self._loaded_peers.clear()
            self._save_device()
            self.store.put_setting("device_id", str(answer.device_id))
            self.store.set_contact_key(self.number, account.public_key, self.clock.now_ms())
        return answer.device_id

    @contextlib.asynccontextmanager
    async def _plain_connection(self) -> AsyncIterator[Connection]:
        last: Exception | None = None
        async with aiohttp.ClientSession() as session:
            for server in self.servers:
                try:
                    conn = await Connection.open(session, server, lambda f: None)
                except ConnectionLost as exc:
                    last = exc
                    continue
                try:
                    yield conn
                finally:
                    await conn.close()
                return
        raise NotConnected(f"no server reachable: {last}")

    # --- connection lifecycle ------------------------------------------------------------

    async def start(self, *, receive: bool = True, wait: bool = True) -> None:
        """Connect in the background (reconnecting as needed); wait for the first auth."""
        if not self.registered:
            raise NotRegistered("this profile is not registered: register and verify first")
        self._load_device()
        self._receive = receive
        self._closing = False
        self._session = aiohttp.ClientSession()
        self._runner = asyncio.get_running_loop().create_task(self._run())
        self._processor = asyncio.get_running_loop().create_task(self._process())
        if wait:
            await self.wait_connected()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the device is authenticated on some server."""
        try:
            async with asyncio.timeout(timeout or self.connect_timeout):
                while True:
                    if self._fatal is not None:
                        raise self._fatal
                    if self._closing:
                        raise NotConnected("the client is closed")
                    conn = self._conn
                    if self._connected.is_set() and conn is not None and not conn.closed:
                        return
                    await asyncio.sleep(0.02)
        except TimeoutError as exc:
            raise NotConnected(f"could not reach {', '.join(self.servers)}") from exc

    async def close(self) -> None:
        """Flush acknowledgements (briefly), then disconnect and close the store."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ClientError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._flush_acks()
        self._closing = True
        tasks = [t for t in (self._runner, self._processor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await conn.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self.store.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        backoff = 0.1
        index = 0
        while not self._closing:
            servers = self.servers
            server = servers[index % len(servers)]
            index += 1
            try:
                conn = await self._authenticate(server)
            except (ConnectionLost, TimeoutError) as exc:
                log.debug("connect to %s failed: %s", server, exc)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)
                continue
            except ServerError as exc:
                if exc.code == ErrorCode.AUTH_FAILED:
                    self._fatal = NotRegistered("the server no longer knows this device")
                    return
                await asyncio.sleep(backoff)
                continue
            backoff = 0.1
            index -= 1  # stay with the server that worked
            self._conn = conn
            self._connected.set()
            try:
                await self._on_connected(conn)
                await conn.wait_closed()
            except ConnectionLost:
                pass
            finally:
                self._connected.clear()
                self._conn = None
            if conn.close_code == CloseCode.REPLACED:
                self._fatal = ClientError(
                    "this device connected again from elsewhere, or its number was "
                    "registered again: this connection gives way"
                )
                return

    async def _authenticate(self, server: str) -> Connection:
        assert self._session is not None
        conn = await Connection.open(self._session, server, self._inbox.put_nowait)
        assert conn.welcome is not None
        device = self._load_device()
        device_id = self.device_id
        assert device_id is not None
        signature = device.sign(auth_payload(conn.welcome.challenge, self.number, device_id))
        try:
            answer = await conn.request(
                Auth(
                    id=next_request_id(),
                    number=self.number,
                    device_id=device_id,
                    signature=signature,
                    receive=self._receive,
                )
            )
        except BaseException:
            await conn.close()
            raise
        assert isinstance(answer, AuthOk)
        self._server_keys = answer.one_time_keys
        return conn

    async def _on_connected(self, conn: Connection) -> None:
        threshold = conn.welcome.limits.keys_low_threshold if conn.welcome else 10
        if self._server_keys < threshold:
            await self._top_up_keys(conn, self._server_keys)
        for entry in self.store.outbox():
            self._spawn(self._transmit(entry))
        if self._receive:
            self._spawn(self._flush_receipts())

    async def _top_up_keys(self, conn: Connection, remaining: int) -> None:
        if remaining >= ONE_TIME_KEYS:
            return
        device = self._load_device()
        keys = device.new_one_time_keys(ONE_TIME_KEYS - remaining)
        self._save_device()  # persist the private halves before the server hands them out
        await conn.request(UploadKeys(id=next_request_id(), one_time_keys=keys))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, frame: Any) -> ServerFrame:
        """Send a request, riding out reconnects until the connect timeout.

        Every request is safe to repeat: sends are deduplicated by cmid, acks of
        deleted envelopes are ignored, and the others only read or replace.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        while True:
            await self.wait_connected(max(0.1, deadline - loop.time()))
            conn = self._conn
            try:
                if conn is None:
                    raise ConnectionLost("not connected")
                return await conn.request(frame)
            except ConnectionLost:
                if loop.time() >= deadline or self._closing:
                    raise
                await asyncio.sleep(0.05)

    # --- contacts, devices, sessions -----------------------------------------------------

    async def _fetch_devices(self, number: str, claim: bool) -> Devices:
        """Fetch a device list, check it against the trusted account key, remember it."""
        try:
            answer = await self._request(
                GetDevices(id=next_request_id(), number=number, claim=claim)
            )
        except ServerError as exc:
            if exc.code == ErrorCode.UNKNOWN_ACCOUNT:
                raise UnknownContact(f"{number} is not on this server") from exc
            raise
        assert isinstance(answer, Devices)
        for bundle in answer.devices:
            try:
                verify_device(answer.account_key, bundle.device)
            except UntrustedDevice as exc:
                raise UntrustedDevices(
                    f"a device of {number} is not signed by its account key: refusing to encrypt"
                ) from exc
        known = self.store.contact_key(number)
        if known != answer.account_key:
            self.store.set_contact_key(number, answer.account_key, self.clock.now_ms())
            if known is not None:
                self._events.put_nowait(IdentityChanged(number, known, answer.account_key))
        devices = [b.device for b in answer.devices]
        if number == self.number:
            devices = [d for d in devices if d.device_id != self.device_id]
        self.store.set_devices(number, devices)
        return answer

    def _peer(self, identity_key: str) -> OlmSessions:
        olm = self._olm()
        if identity_key not in self._loaded_peers:
            pickles = self.store.sessions(identity_key)
            if pickles:
                olm.load_peer(identity_key, pickles, self.store.cipher.pickle_key)
            self._loaded_peers.add(identity_key)
        return olm

    async def _encrypt(self, number: str, plaintext: bytes, refresh: bool) -> list[OutEnvelope]:
        """One ciphertext per device of the number, starting sessions where needed."""
        devices = [] if refresh else self.store.devices(number)
        if not devices:
            await self._fetch_devices(number, claim=False)
            devices = self.store.devices(number)
        missing = [d for d in devices if not self._peer(d.identity_key).has_session(d.identity_key)]
        if missing:
            answer = await self._fetch_devices(number, claim=True)
            devices = self.store.devices(number)
            wanted = {d.identity_key for d in missing}
            for bundle in answer.devices:
                key = bundle.device.identity_key
                if key in wanted and bundle.prekey is not None:
                    self._peer(key).start_session(bundle.device, bundle.prekey)
        olm = self._olm()
        out = []
        for d in devices:
            if not olm.has_session(d.identity_key):
                raise ClientError(f"device {d.device_id} of {number} has no keys left to start")
            msg_type, body = olm.encrypt(d.identity_key, plaintext)
            out.append(OutEnvelope(to=number, device_id=d.device_id, type=msg_type, body=body))
        return out

    def _persist_crypto(self) -> None:
        olm = self._olm()
        for peer in olm.dirty_peers():
            self.store.set_sessions(peer, olm.pickle_peer(peer, self.store.cipher.pickle_key))
        if olm.device_dirty():
            self._save_device()
        olm.clear_dirty()

    # --- sending -------------------------------------------------------------------------

    async def send_text(self, number: str, text: str, *, timeout: float = 60.0) -> str:
        """Encrypt and send a text; returns its message id once the server stored it."""
        peer = _normalize(number)
        cmid = secrets.token_bytes(16)
        mid = cmid.hex()
        now = self.clock.now_ms()
        content = encode_content(Text(id=mid, ts=now, body=text))
        entry = await self._queue(peer, cmid, content, message=(mid, text, now))
        await self._await_sent(entry, timeout)
        return mid

    async def _queue(
        self,
        peer: str,
        cmid: bytes,
        content: bytes,
        message: tuple[str, str, int] | None = None,
        done_receipts: list[str] | None = None,
    ) -> OutboxEntry:
        async with self._crypto_lock:
            envelopes = await self._encrypt(peer, content, refresh=False)
            frame = Send(id=0, cmid=cmid, envelopes=envelopes)
            entry = OutboxEntry(cmid, peer, content, codec.encode(frame))
            with self.store.transaction():
                self._persist_crypto()
                self.store.put_outbox(entry, self.clock.now_ms())
                if done_receipts:
                    self.store.clear_pending_receipts(peer, done_receipts)
                if message is not None:
                    mid, text, ts = message
                    self.store.add_message(
                        id=mid,
                        chat=peer,
                        outgoing=True,
                        sender=self.number,
                        body=text,
                        ts=ts,
                        server_ts=None,
                        status="pending",
                    )
        return entry

    async def _await_sent(self, entry: OutboxEntry, timeout: float) -> Sent:
        fut = self._waiters.get(entry.cmid)
        if fut is None:
            fut = self._waiters[entry.cmid] = asyncio.get_running_loop().create_future()
        self._spawn(self._transmit(entry))
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError as exc:
            raise NotConnected(
                "the server did not confirm in time; the message stays queued"
            ) from exc
        finally:
            if fut.done():
                self._waiters.pop(entry.cmid, None)

    async def _transmit(self, entry: OutboxEntry) -> None:
        """Send an outbox entry until the server stores it; re-encrypt if devices changed."""
        try:
            answer = await self._transmit_once(entry)
        except (UnknownContact, UntrustedDevices) as exc:
            self._fail(entry, exc)
        except ServerError as exc:
            if exc.code in (ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL):
                return  # transient: stays in the outbox
            self._fail(entry, exc)
        except ClientError:
            return  # not connected, or this connection gave way: stays in the outbox
        else:
            self._sent(entry, answer)

    async def _transmit_once(self, entry: OutboxEntry) -> Sent:
        frame = msgspec.msgpack.decode(entry.frame, type=Send)
        for _ in range(2):
            try:
                answer = await self._request(msgspec.structs.replace(frame, id=next_request_id()))
            except ServerError as exc:
                if exc.code != ErrorCode.MISMATCHED_DEVICES:
                    raise
                async with self._crypto_lock:  # the device list changed: encrypt again
                    envelopes = await self._encrypt(entry.chat, entry.content, refresh=True)
                    frame = Send(id=0, cmid=entry.cmid, envelopes=envelopes)
                    entry = OutboxEntry(entry.cmid, entry.chat, entry.content, codec.encode(frame))
                    with self.store.transaction():
                        self._persist_crypto()
                        self.store.put_outbox(entry, self.clock.now_ms())
                continue
            assert isinstance(answer, Sent)
            return answer
        answer = await self._request(msgspec.structs.replace(frame, id=next_request_id()))
        assert isinstance(answer, Sent)
        return answer

    def _sent(self, entry: OutboxEntry, answer: Sent) -> None:
        with self.store.transaction():
            self.store.remove_outbox(entry.cmid)
            mid = entry.cmid.hex()
            self.store.set_server_ts(self.number, mid, answer.ts)
            self.store.set_status(self.number, [mid], "sent")
        fut = self._waiters.get(entry.cmid)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    def _fail(self, entry: OutboxEntry, exc: ClientError) -> None:
        with self.store.transaction():
            self.store.remove_outbox(entry.cmid)
            self.store.set_status(self.number, [entry.cmid.hex()], "failed")
        fut = self._waiters.get(entry.cmid)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    async def mark_read(self, number: str) -> list[str]:
        """Mark a chat's received messages read and tell the sender; returns their ids."""
        peer = _normalize(number)
        ids = self.store.unread(peer)
        if not ids:
            return []
        with self.store.transaction():
            self.store.set_status(peer, ids, "read")
        entry = await self._queue(
            peer, secrets.token_bytes(16), encode_content(Receipt(status="read", ids=ids))
        )
        await self._await_sent(entry, 60.0)
        return ids

    async def send_typing(self, number: str, active: bool = True) -> None:
        """Tell a contact's online devices that we are typing (never stored)."""
        peer = _normalize(number)
        async with self._crypto_lock:
            envelopes = await self._encrypt(peer, encode_content(Typing(active=active)), False)
            with self.store.transaction():
                self._persist_crypto()
        frame = Send(
            id=next_request_id(),
            cmid=secrets.token_bytes(16),
            envelopes=envelopes,
            ephemeral=True,
        )
        await self._request(frame)

    async def set_presence_visible(self, visible: bool) -> None:
        """Let everyone, or nobody, see when this account is online and was last seen."""
        await self._request(
            SetPrivacy(id=next_request_id(), last_seen="everyone" if visible else "nobody")
        )

    async def watch_presence(self, numbers: list[str]) -> None:
        """Receive PresenceChanged events for these contacts."""
        await self._request(
            WatchPresence(id=next_request_id(), numbers=[_normalize(n) for n in numbers])
        )

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

        async def idle() -> None:
            await self._drained.wait()
            while (
                self._busy or not self._inbox.empty() or self._acks or self.store.pending_receipts()
            ):
                self._idle.clear()
                await self._idle.wait()
            for task in list(self._tasks):
                await asyncio.gather(task, return_exceptions=True)

        async with asyncio.timeout(timeout):
            await idle()

    async def _process(self) -> None:
        while True:
            frame = await self._inbox.get()
            self._busy += 1
            try:
                await self._handle_push(frame)
                if self._inbox.empty() or len(self._acks) >= ACK_BATCH:
                    if self._inbox.empty() and self.ack_delay:
                        await asyncio.sleep(self.ack_delay)
                    await self._flush_acks()
                    await self._flush_receipts()
            except ClientError as exc:
                log.warning("processing a push failed: %s", exc)
            except Exception:
                log.exception("processing a push failed")
            finally:
                self._busy -= 1
                self._idle.set()

    async def _handle_push(self, frame: ServerFrame) -> None:
        match frame:
            case Envelope():
                await self._on_envelope(frame)
            case Drained():
                self._drained.set()
            case KeysLow():
                conn = self._conn
                if conn is not None:
                    await self._top_up_keys(conn, frame.remaining)
            case Presence():
                self._events.put_nowait(
                    PresenceChanged(frame.number, frame.online, frame.last_seen)
                )
            case _:
                log.debug("unhandled push %s", type(frame).__name__)

    async def _sender_device(self, number: str, device_id: int) -> DeviceKeys | None:
        for d in self.store.devices(number):
            if d.device_id == device_id:
                return d
        try:
            await self._fetch_devices(number, claim=False)
        except (UnknownContact, UntrustedDevices):
            return None
        for d in self.store.devices(number):
            if d.device_id == device_id:
                return d
        return None

    async def _on_envelope(self, env: Envelope) -> None:
        digest = hashlib.sha256(env.body).digest()
        if env.eid and self.store.seen(digest):
            self._acks.append(env.eid)  # processed before a crash or lost ack
            return
        device = await self._sender_device(env.sender, env.sender_device)
        if device is None:
            self._reject(env, digest, "the sender's device is unknown or not signed")
            return
        async with self._crypto_lock:
            try:
                plaintext = self._peer(device.identity_key).decrypt(
                    device.identity_key, env.type, env.body
                )
                content = decode_content(plaintext)
            except (DecryptionFailed, CryptoError) as exc:
                self._reject(env, digest, f"cannot decrypt: {exc}")
                return
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._reject(env, digest, f"unreadable content: {exc}")
                return
            with self.store.transaction():
                self._persist_crypto()
                event = self._apply(env, content)
                if env.eid:
                    self.store.add_seen(digest, self.clock.now_ms())
        if env.eid:
            self._acks.append(env.eid)
        if event is not None:
            self._events.put_nowait(event)

    def _reject(self, env: Envelope, digest: bytes, reason: str) -> None:
        if env.eid:
            self.store.add_seen(digest, self.clock.now_ms())
            self._acks.append(env.eid)
        self._events.put_nowait(DecryptionError(env.sender, env.sender_device, reason))

    def _apply(self, env: Envelope, content: Content) -> Event | None:
        match content:
            case Text():
                added = self.store.add_message(
                    id=content.id,
                    chat=env.sender,
                    outgoing=False,
                    sender=env.sender,
                    body=content.body,
                    ts=content.ts,
                    server_ts=env.ts,
                    status="received",
                )
                if not added:
                    return None
                self.store.add_pending_receipt(env.sender, content.id)
                return MessageReceived(content.id, env.sender, content.body, content.ts, env.ts)
            case Receipt():
                moved = self.store.set_status(self.number, list(content.ids), content.status)
                if not moved:
                    return None
                return ReceiptReceived(env.sender, content.status, tuple(moved))
            case Typing():
                return TypingChanged(env.sender, content.active)
        return None

    async def _flush_acks(self) -> None:
        if not self._acks:
            return
        eids, self._acks = self._acks, []
        conn = self._conn
        if conn is None:
            return  # redelivered on reconnect, then recognised as seen
        try:
            await conn.request(Ack(id=next_request_id(), eids=eids))
        except ServerError as exc:
            if exc.code != ErrorCode.UNKNOWN_ENVELOPE:
                log.warning("ack failed: %s", exc)
        except ConnectionLost:
            pass

    async def _flush_receipts(self) -> None:
        """Queue delivered receipts; they were stored with their messages, before the ack."""
        for peer, ids in self.store.pending_receipts().items():
            content = encode_content(Receipt(status="delivered", ids=ids))
            try:
                entry = await self._queue(peer, secrets.token_bytes(16), content, done_receipts=ids)
            except ClientError as exc:
                log.warning("delivered receipt not sent yet: %s", exc)
                continue
            self._spawn(self._transmit(entry))

    # --- local views ---------------------------------------------------------------------

    def history(self, number: str, limit: int = 50) -> list[HistoryEntry]:
        """The last messages of a chat, oldest first."""
        return self.store.history(_normalize(number), limit)

    async def safety_number(self, number: str) -> tuple[str, str]:
        """The formatted safety number with a contact and the payload for its QR code."""
        peer = _normalize(number)
        key = self.store.contact_key(peer)
        if key is None:
            await self._fetch_devices(peer, claim=False)
            key = self.store.contact_key(peer)
        assert key is not None
        own = self.account_key.public_key
        digits = safety_number(self.number, own, peer, key)
        return format_safety_number(digits), safety_qr_payload(self.number, own, peer, key)


def _normalize(number: str) -> str:
    try:
        return phone.normalize(number)
    except ValueError as exc:
        raise ClientError(f"{number}: {exc}") from exc
