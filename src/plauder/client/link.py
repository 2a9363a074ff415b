"""The device's link to its servers: connect, authenticate, reconnect, retry requests."""

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from plauder.client.connection import Connection, next_request_id
from plauder.client.errors import (
    BadServerUrl,
    ClientError,
    ConnectionLost,
    NotConnected,
    NotRegistered,
    ServerError,
)
from plauder.client.keys import Keys
from plauder.client.profile import Profile
from plauder.client.servers import ServerOrder
from plauder.crypto import auth_payload
from plauder.protocol.errors import CloseCode, ErrorCode
from plauder.protocol.frames import Auth, AuthOk, ClientFrame, ServerFrame

log = logging.getLogger(__name__)

# A connection that ends sooner than this after authenticating counts as a failed
# attempt, so that a node closing every connection at once is not retried in a loop.
STABLE_SECONDS = 2.0


class Link:
    """Keeps this device authenticated on one of its servers while the client runs.

    `run()` is the reconnect loop; `request()` sends a frame on whatever connection
    is up, riding out reconnects. Pushes go to `on_push`; after each authentication
    the one-time keys are topped up and `on_connected` runs.

    The servers are tried in rounds (`ServerOrder`): a refused connection, a
    timeout or an error answer moves on to the next URL at once; only after a
    whole round failed does the loop back off. A lost connection (the node went
    away or died) moves on to the next URL at once too, and starts a new round
    unless it ended within `STABLE_SECONDS` of authenticating.
    """

    def __init__(
        self,
        profile: Profile,
        keys: Keys,
        *,
        on_push: Callable[[ServerFrame], None],
        on_connected: Callable[[], Awaitable[None]],
        connect_timeout: float,
        server_timeout: float,
        order: ServerOrder,
    ) -> None:
        self._profile = profile
        self._keys = keys
        self._on_push = on_push
        self._on_connected = on_connected
        self.connect_timeout = connect_timeout
        self.server_timeout = server_timeout
        self._order = order
        self._server: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._conn: Connection | None = None
        self._connected = asyncio.Event()
        self._fatal: ClientError | None = None
        self._closing = False
        self._server_keys = 0
        self.receive = True

    @property
    def conn(self) -> Connection | None:
        """The authenticated connection, if one is up."""
        return self._conn

    @property
    def server(self) -> str | None:
        """The URL of the server the device is authenticated on, if any."""
        return self._server if self._conn is not None else None

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The HTTP session of the running client (None before start or after close)."""
        return self._session

    @property
    def closing(self) -> bool:
        """Whether the client is closing: no more reconnects."""
        return self._closing

    def open(self, receive: bool) -> None:
        """Prepare to connect: whether the server should deliver messages, and an HTTP session."""
        self.receive = receive
        self._closing = False
        self._session = aiohttp.ClientSession()

    def stop(self) -> None:
        """Stop reconnecting; requests waiting for a connection give up."""
        self._closing = True

    async def disconnect(self) -> None:
        """Close the current connection, waiting at most five seconds."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await conn.close()

    async def close_session(self) -> None:
        """Release the HTTP session."""
        if self._session is not None:
            await self._session.close()

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
            raise NotConnected(f"could not reach {', '.join(self._profile.servers)}") from exc

    async def request(self, frame: ClientFrame) -> ServerFrame:
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

    @contextlib.asynccontextmanager
    async def plain(self) -> AsyncIterator[Connection]:
        """An unauthenticated connection to the first server that answers (for registration)."""
        if not self._profile.servers:
            raise BadServerUrl("this profile has no server URL yet: request a code first")
        failures: list[str] = []
        async with aiohttp.ClientSession() as session:
            for server in self._order.round(self._profile.servers, self._profile.last_server):
                try:
                    conn = await Connection.open(
                        session, server, lambda f: None, self.server_timeout
                    )
                except ConnectionLost as exc:
                    failures.append(str(exc))
                    continue
                self._profile.remember_server(server)  # verify goes where the code was asked
                try:
                    yield conn
                finally:
                    await conn.close()
                return
        raise NotConnected("no server reachable: " + "; ".join(failures))

    async def run(self) -> None:
        """Connect and authenticate, again after every loss, until closed or refused for good."""
        backoff = 0.1
        moving_on = False
        while not self._closing:
            servers = self._order.round(self._profile.servers, self._profile.last_server, moving_on)
            for server in servers:
                if self._closing:
                    return
                try:
                    conn = await self._authenticate(server)
                except ConnectionLost as exc:
                    log.info("%s", exc)
                    continue
                except ServerError as exc:
                    if exc.code == ErrorCode.AUTH_FAILED:
                        self._fatal = NotRegistered("the server no longer knows this device")
                        return
                    log.info("%s refused the device for now: %s", server, exc)
                    continue
                self._profile.remember_server(server)
                began = asyncio.get_running_loop().time()
                await self._serve(server, conn)
                if conn.close_code == CloseCode.REPLACED:
                    self._fatal = ClientError(
                        "this device connected again from elsewhere, or its number was "
                        "registered again: this connection gives way"
                    )
                    return
                log.info("connection to %s ended (%s)", server, conn.close_code)
                if asyncio.get_running_loop().time() - began < STABLE_SECONDS:
                    continue  # closed at once: a failed attempt of this round
                backoff = 0.1
                moving_on = True  # the node went away or died: the next URL, at once
                break
            else:
                moving_on = False  # a whole round failed: wait, then start again
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)

    async def _serve(self, server: str, conn: Connection) -> None:
        """Offer the authenticated connection to the client until it closes."""
        self._server = server
        self._conn = conn
        self._connected.set()
        try:
            await self._connected_to(conn)
            await conn.wait_closed()
        except ConnectionLost:
            pass
        finally:
            self._connected.clear()
            self._conn = None

    async def _authenticate(self, server: str) -> Connection:
        """Open, greet and authenticate within `server_timeout` (ConnectionLost otherwise)."""
        assert self._session is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server_timeout
        conn = await Connection.open(self._session, server, self._on_push, self.server_timeout)
        assert conn.welcome is not None
        device = self._keys.load()
        number = self._profile.number
        device_id = self._profile.device_id
        assert device_id is not None
        signature = device.sign(auth_payload(conn.welcome.challenge, number, device_id))
        try:
            answer = await conn.request(
                Auth(
                    id=next_request_id(),
                    number=number,
                    device_id=device_id,
                    signature=signature,
                    receive=self.receive,
                ),
                timeout=max(0.1, deadline - loop.time()),
            )
        except BaseException:
            await conn.close()
            raise
        assert isinstance(answer, AuthOk)
        self._server_keys = answer.one_time_keys
        return conn

    async def _connected_to(self, conn: Connection) -> None:
        threshold = conn.welcome.limits.keys_low_threshold if conn.welcome else 10
        if self._server_keys < threshold:
            try:
                await self._keys.top_up(conn, self._server_keys)
            except ServerError as exc:  # not fatal: the server says keys_low again later
                log.warning("one-time keys not topped up: %s", exc)
        await self._on_connected()
