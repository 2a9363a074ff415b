"""The device's link to its servers: connect, authenticate, reconnect, retry requests."""

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from plauder.client.connection import Connection, next_request_id
from plauder.client.errors import (
    ClientError,
    ConnectionLost,
    NotConnected,
    NotRegistered,
    ServerError,
)
from plauder.client.keys import Keys
from plauder.client.profile import Profile
from plauder.crypto import auth_payload
from plauder.protocol.errors import CloseCode, ErrorCode
from plauder.protocol.frames import Auth, AuthOk, ClientFrame, ServerFrame

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def plain_connection(servers: list[str]) -> AsyncIterator[Connection]:
    """An unauthenticated connection to the first reachable server (for registration)."""
    last: Exception | None = None
    async with aiohttp.ClientSession() as session:
        for server in servers:
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


class Link:
    """Keeps this device authenticated on one of its servers while the client runs.

    `run()` is the reconnect loop; `request()` sends a frame on whatever connection
    is up, riding out reconnects. Pushes go to `on_push`; after each authentication
    the one-time keys are topped up and `on_connected` runs.
    """

    def __init__(
        self,
        profile: Profile,
        keys: Keys,
        *,
        on_push: Callable[[ServerFrame], None],
        on_connected: Callable[[], Awaitable[None]],
        connect_timeout: float,
    ) -> None:
        self._profile = profile
        self._keys = keys
        self._on_push = on_push
        self._on_connected = on_connected
        self.connect_timeout = connect_timeout
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

    async def run(self) -> None:
        """Connect and authenticate, again after every loss, until closed or refused for good."""
        backoff = 0.1
        index = 0
        while not self._closing:
            servers = self._profile.servers
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
                await self._connected_to(conn)
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
        conn = await Connection.open(self._session, server, self._on_push)
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
                )
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
            await self._keys.top_up(conn, self._server_keys)
        await self._on_connected()
