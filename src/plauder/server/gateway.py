"""WebSocket connections: handshake, authentication, dispatch of frames to services."""

import asyncio
import enum
import logging
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from plauder.clock import Clock
from plauder.crypto import BadSignature, identity
from plauder.protocol import codec
from plauder.protocol.errors import CloseCode, ErrorCode
from plauder.protocol.frames import (
    Ack,
    Auth,
    AuthOk,
    ClientFrame,
    Error,
    GetDevices,
    GetTurn,
    Hello,
    KeysLow,
    Ok,
    Ping,
    Pong,
    Registered,
    RequestCode,
    Send,
    ServerFrame,
    SetPrivacy,
    UploadKeys,
    Verify,
    WatchPresence,
    Welcome,
)
from plauder.protocol.limits import PROTOCOL_VERSION
from plauder.server.accounts import Accounts, number_or_error
from plauder.server.calls import Calls
from plauder.server.config import Config
from plauder.server.delivery import DeviceFeed
from plauder.server.errors import ServiceError, StorageError
from plauder.server.framing import BatchedWriter, Flusher
from plauder.server.groups import GROUP_FRAMES, Groups
from plauder.server.keys import Keys
from plauder.server.media import MEDIA_FRAMES, MediaService
from plauder.server.messages import Messages
from plauder.server.metrics import Metrics
from plauder.server.presence import PresenceService
from plauder.server.ratelimit import TokenBucket
from plauder.server.router import Router
from plauder.server.storage import Store
from plauder.server.storage.base import Sender

log = logging.getLogger(__name__)

MAX_PENDING_REQUESTS = 64
SLOW_BUFFER_BYTES = 512 * 1024


class State(enum.Enum):
    """Where a connection is in its life."""

    NEW = "new"  # waiting for hello
    GREETED = "greeted"  # may register or authenticate
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


class Gateway:
    """Accepts WebSocket connections and owns the set of live ones."""

    def __init__(
        self,
        *,
        config: Config,
        clock: Clock,
        store: Store,
        router: Router,
        accounts: Accounts,
        keys: Keys,
        messages: Messages,
        groups: Groups,
        media: MediaService,
        calls: Calls,
        presence: PresenceService,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.router = router
        self.accounts = accounts
        self.keys = keys
        self.messages = messages
        self.groups = groups
        self.media = media
        self.calls = calls
        self.presence = presence
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.accepting = True
        self._flusher: Flusher | None = None

    def flusher(self) -> Flusher:
        """The one flusher of this server's connections (made on the running loop)."""
        if self._flusher is None:
            self._flusher = Flusher(asyncio.get_running_loop())
        return self._flusher

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler of /v1/ws."""
        if not self.accepting:
            raise web.HTTPServiceUnavailable(text="server is shutting down")
        ws = web.WebSocketResponse(
            max_msg_size=self.config.max_frame_bytes * 4, compress=False, autoping=True
        )
        await ws.prepare(request)
        conn = Connection(self, ws, request.transport)
        self.connections.add(conn)
        self.metrics.connections_opened += 1
        self.metrics.connections_open += 1
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)
            self.metrics.connections_open -= 1
            await conn.cleanup()
        return ws

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a request handler in the background, tracked for shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def shutdown(self) -> None:
        """Stop accepting, let running requests finish, then close every connection."""
        self.accepting = False
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.config.shutdown_timeout_seconds)
        await asyncio.gather(
            *(
                c.close(CloseCode.GOING_AWAY, "server shutting down")
                for c in list(self.connections)
            ),
            return_exceptions=True,
        )

    async def push_keys_low(self, low: list[tuple[int, int]]) -> None:
        """Tell devices whose one-time key pool runs low."""
        for device_pk, remaining in low:
            await self.router.push(device_pk, codec.encode(KeysLow(remaining=remaining)))


class Connection:
    """One client connection: its state machine and its requests."""

    def __init__(self, gw: Gateway, ws: web.WebSocketResponse, transport: Any) -> None:
        self.gw = gw
        self.ws = ws
        self.transport = transport
        self.writer = BatchedWriter(transport, gw.flusher())
        self.state = State.NEW
        self.challenge: bytes | None = None
        self.sender: Sender | None = None
        self.signing_key = ""
        self.feed: DeviceFeed | None = None
        self.strikes = 0
        self.code_requests = 0
        self.verify_attempts = 0
        self.bucket = TokenBucket(gw.clock, gw.config.requests_per_second, gw.config.request_burst)
        claims = gw.config.claims_per_minute
        self.claims = TokenBucket(gw.clock, claims / 60.0, claims)
        group_claims = gw.config.group_claims_per_minute
        self.group_claims = TokenBucket(gw.clock, group_claims / 60.0, group_claims)
        turns = gw.config.turn_requests_per_minute
        self.turn_requests = TokenBucket(gw.clock, turns / 60.0, turns)
        self.pending = 0  # authenticated requests running
        self.room = asyncio.Event()
        self.auth_timer = asyncio.get_running_loop().call_later(
            gw.config.auth_timeout_seconds, self._auth_timeout
        )

    # --- the read loop -----------------------------------------------------------------

    async def serve(self) -> None:
        """Read frames until the connection closes."""
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                await self._on_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await self._reject(0, ErrorCode.BAD_FRAME, "frames are binary msgpack")
            else:
                break
            if self.state is State.CLOSED:
                break

    async def _on_bytes(self, data: bytes) -> None:
        gw = self.gw
        gw.metrics.frames_received += 1
        try:
            frame = codec.decode_client(data, gw.config.max_frame_bytes)
        except codec.ProtocolError as exc:
            await self._reject(exc.request_id, exc.code, exc.message)
            return
        request_id = getattr(frame, "id", 0)
        if not self.bucket.take():
            await self._reject(request_id, ErrorCode.RATE_LIMITED, "too many requests: slow down")
            return
        if isinstance(frame, Hello):
            await self._hello(frame)
        elif self.state is State.NEW:
            await self._reject(request_id, ErrorCode.HELLO_REQUIRED, "send hello first")
        elif isinstance(frame, RequestCode | Verify | Auth):
            if self.state is State.AUTHENTICATED:
                await self._reject(request_id, ErrorCode.ALREADY_AUTHENTICATED, "already signed in")
            else:
                await self._guarded(request_id, self._unauthenticated(frame))
        elif self.sender is None:
            await self._reject(request_id, ErrorCode.UNAUTHENTICATED, "authenticate first")
        else:
            if self.pending >= MAX_PENDING_REQUESTS:
                self.room.clear()
                await self.room.wait()  # backpressure: stop reading until a request ends
            self.pending += 1
            gw.spawn(self._request(request_id, frame, self.sender))

    async def _request(self, request_id: int, frame: ClientFrame, sender: Sender) -> None:
        try:
            await self._dispatch(frame, sender)
        except Exception as exc:
            await self._report(request_id, exc)
        finally:
            self.pending -= 1
            if self.pending < MAX_PENDING_REQUESTS:
                self.room.set()

    async def _guarded(self, request_id: int, work: Any) -> None:
        try:
            await work
        except Exception as exc:
            await self._report(request_id, exc)

    async def _report(self, request_id: int, exc: Exception) -> None:
        """Answer a failed request with its error frame."""
        if isinstance(exc, ServiceError):
            await self.error(request_id, exc.code, exc.message)
        elif isinstance(exc, StorageError):
            await self.error(request_id, ErrorCode.UNAVAILABLE, "storage unavailable: try again")
        else:
            log.error("request failed", exc_info=exc)
            await self.error(request_id, ErrorCode.INTERNAL, "internal error")

    # --- handshake and authentication --------------------------------------------------

    async def _hello(self, frame: Hello) -> None:
        if self.state is State.AUTHENTICATED:
            await self._reject(0, ErrorCode.ALREADY_AUTHENTICATED, "already signed in")
            return
        if frame.v != PROTOCOL_VERSION:
            await self.error(0, ErrorCode.UNSUPPORTED_VERSION, f"server speaks v{PROTOCOL_VERSION}")
            await self.close(CloseCode.UNSUPPORTED_VERSION, "unsupported protocol version")
            return
        self.state = State.GREETED
        self.challenge = secrets.token_bytes(32)
        await self.send(
            Welcome(
                v=PROTOCOL_VERSION,
                challenge=self.challenge,
                limits=self.gw.config.limits,
                server="plauder",
            )
        )

    async def _unauthenticated(self, frame: RequestCode | Verify | Auth) -> None:
        gw = self.gw
        match frame:
            case RequestCode():
                self.code_requests += 1
                if self.code_requests > gw.config.code_requests_per_connection:
                    raise ServiceError(ErrorCode.RATE_LIMITED, "too many code requests")
                await gw.accounts.request_code(frame)
                await self.send(Ok(id=frame.id))
            case Verify():
                self.verify_attempts += 1
                if self.verify_attempts > gw.config.code_attempts:
                    raise ServiceError(ErrorCode.RATE_LIMITED, "too many attempts: reconnect")
                reg = await gw.accounts.verify(frame)
                for device_pk in reg.removed_device_pks:
                    await gw.router.evict(device_pk)  # its receiving connection, on any node
                removed = set(reg.removed_device_pks)
                for conn in [  # and its send-only connections here
                    c for c in gw.connections if c.sender and c.sender.device_pk in removed
                ]:
                    await conn.close(CloseCode.REPLACED, "the number was registered again")
                await self.send(Registered(id=frame.id, device_id=reg.device_id))
            case Auth():
                await self._auth(frame)

    async def _auth(self, frame: Auth) -> None:
        gw = self.gw
        challenge, self.challenge = self.challenge, None
        if challenge is None:
            raise ServiceError(ErrorCode.AUTH_FAILED, "no challenge: send hello again")
        number = number_or_error(frame.number)
        device = await gw.store.auth_device(number, frame.device_id)
        try:
            if device is None:
                raise BadSignature("unknown device")
            identity.verify_signature(
                device.signing_key,
                identity.auth_payload(challenge, number, frame.device_id),
                frame.signature,
            )
        except BadSignature as exc:
            raise ServiceError(ErrorCode.AUTH_FAILED, "authentication failed") from exc
        assert device is not None
        self.state = State.AUTHENTICATED
        self.auth_timer.cancel()
        self.sender = Sender(device.account_id, number, device.device_pk, frame.device_id)
        self.signing_key = device.signing_key
        gw.metrics.authenticated += 1
        if frame.receive:
            self.feed = DeviceFeed(
                gw.store,
                device.device_pk,
                self._send_bytes,
                self.writable,
                gw.config.delivery_window,
            )
            await gw.router.attach(device.device_pk, self)
        count = await gw.store.count_one_time_keys(device.device_pk)
        await self.send(AuthOk(id=frame.id, one_time_keys=count, server_time=gw.clock.now_ms()))
        log.debug("authenticated account=%d device=%d", device.account_id, frame.device_id)
        await gw.presence.connected(device.account_id, number)
        if self.feed is not None:
            self.feed.start()

    # --- authenticated requests --------------------------------------------------------

    async def _dispatch(self, frame: ClientFrame, sender: Sender) -> None:
        gw = self.gw
        match frame:
            case Send():
                gw.messages.check(frame)
                sent, deliveries = await gw.messages.store(sender, frame)
                # route before answering: nothing may suspend between commit and routing,
                # so envelopes reach each device's feed in commit order
                await gw.messages.deliver(sender, sent.ts, deliveries)
                await self.send(sent)
            case Ack():
                count = await gw.store.ack(sender.device_pk, frame.eids)
                gw.metrics.envelopes_acked += count
                if self.feed is not None:
                    self.feed.acked(frame.eids)
                if count < len(set(frame.eids)):
                    raise ServiceError(
                        ErrorCode.UNKNOWN_ENVELOPE, "some envelopes are not queued for this device"
                    )
                await self.send(Ok(id=frame.id))
            case GetDevices():
                if frame.claim and not self.claims.take():
                    raise ServiceError(ErrorCode.RATE_LIMITED, "too many pre-key claims: wait")
                devices, low = await gw.keys.devices(frame)
                await self.send(devices)
                await gw.push_keys_low(low)
            case UploadKeys():
                await gw.keys.upload(sender.device_pk, self.signing_key, frame)
                await self.send(Ok(id=frame.id))
            case SetPrivacy():
                visible = frame.last_seen == "everyone"
                await gw.presence.set_visible(sender.account_id, sender.number, visible)
                await self.send(Ok(id=frame.id))
            case WatchPresence():
                current = await gw.presence.watch(self, list(frame.numbers))
                await self.send(Ok(id=frame.id))
                for data in current:
                    await self._send_bytes(data)
            case Ping():
                await self.send(Pong(id=frame.id, server_time=gw.clock.now_ms()))
            case GetTurn():
                await self.send(gw.calls.turn(frame, sender, self.turn_requests.take))
            case _ if isinstance(frame, GROUP_FRAMES):
                answer, low = await gw.groups.handle(frame, sender, self.group_claims.take)
                await self.send(answer)
                await gw.push_keys_low(low)
            case _ if isinstance(frame, MEDIA_FRAMES):
                await self.send(await gw.media.handle(frame, sender))
            case _:
                raise ServiceError(ErrorCode.INVALID_REQUEST, "not allowed here")

    # --- output ------------------------------------------------------------------------

    def writable(self) -> bool:
        """Whether the socket can take a frame without queuing much in memory."""
        t = self.transport
        return (
            t is not None and not t.is_closing() and t.get_write_buffer_size() < SLOW_BUFFER_BYTES
        )

    async def _send_bytes(self, data: bytes) -> bool:
        if self.state is State.CLOSED or self.ws.closed:
            return False
        return self.writer.send(data)

    async def send(self, frame: ServerFrame) -> None:
        """Encode and send a frame, ignoring a closed connection."""
        await self._send_bytes(codec.encode(frame))

    async def error(self, request_id: int, code: ErrorCode, message: str) -> None:
        """Send an error frame."""
        self.gw.metrics.errors_sent += 1
        await self.send(Error(id=request_id, code=code.value, message=message))

    async def _reject(self, request_id: int, code: ErrorCode, message: str) -> None:
        await self.error(request_id, code, message)
        self.strikes += 1
        if self.strikes > self.gw.config.max_bad_frames:
            close = (
                CloseCode.RATE_LIMITED
                if code is ErrorCode.RATE_LIMITED
                else CloseCode.PROTOCOL_ERROR
            )
            await self.close(close, "too many bad frames")

    # --- router callbacks --------------------------------------------------------------

    async def push(self, data: bytes) -> None:
        """An unstored frame for this device (ephemeral, keys_low, presence)."""
        if self.writable():
            await self._send_bytes(data)

    async def replaced(self) -> None:
        """The device connected again elsewhere."""
        await self.close(CloseCode.REPLACED, "the device connected again")

    # --- closing -----------------------------------------------------------------------

    def _auth_timeout(self) -> None:
        if self.state is not State.AUTHENTICATED:
            self.gw.spawn(self.close(CloseCode.AUTH_TIMEOUT, "authenticate in time"))

    async def close(self, code: int, reason: str) -> None:
        """Close the WebSocket with a code."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.writer.flush()  # what was queued goes out before the close frame
        await self.ws.close(code=code, message=reason.encode())

    async def cleanup(self) -> None:
        """Release everything the connection held."""
        self.state = State.CLOSED
        self.auth_timer.cancel()
        gw = self.gw
        if self.feed is not None:
            self.feed.close()
        gw.presence.unwatch(self)
        if self.sender is not None:
            gw.metrics.authenticated -= 1
            gw.router.detach(self.sender.device_pk, self)
            try:
                await gw.presence.disconnected(self.sender.account_id, self.sender.number)
            except StorageError:
                log.warning("could not record last seen")
