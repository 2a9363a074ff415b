"""One WebSocket to a server: handshake, requests matched to answers, pushes handed on."""

import asyncio
import itertools
from collections.abc import Callable

import aiohttp

from plauder.client.errors import ConnectionLost, ServerError
from plauder.protocol import codec
from plauder.protocol.frames import ClientFrame, Error, Hello, ServerFrame, Welcome
from plauder.protocol.limits import PROTOCOL_VERSION

_ids = itertools.count(1)


def next_request_id() -> int:
    """A request id unique within this process."""
    return next(_ids)


def ws_url(server: str) -> str:
    """The WebSocket URL of a server given as http(s)://host:port."""
    base = server.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    elif not base.startswith(("ws://", "wss://")):
        base = "ws://" + base
    return base + "/v1/ws"


class Connection:
    """A connected WebSocket that speaks plauder frames."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, on_push: Callable[[ServerFrame], None]
    ) -> None:
        self._ws = ws
        self._on_push = on_push
        self._pending: dict[int, asyncio.Future[ServerFrame]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.welcome: Welcome | None = None
        self.close_code: int | None = None

    @classmethod
    async def open(
        cls,
        session: aiohttp.ClientSession,
        server: str,
        on_push: Callable[[ServerFrame], None],
        timeout: float = 10.0,
    ) -> "Connection":
        """Connect, say hello and wait for the welcome, all within `timeout` seconds.

        Raises ConnectionLost when the server refuses, fails or is too slow.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                ws = await session.ws_connect(
                    ws_url(server),
                    autoping=True,
                    heartbeat=30.0,
                    max_msg_size=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    compress=0,
                )
        except TimeoutError as exc:
            raise ConnectionLost(f"cannot connect to {server}: no answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionLost(f"cannot connect to {server}: {exc}") from exc
        conn = cls(ws, on_push)
        welcome_fut: asyncio.Future[ServerFrame] = loop.create_future()
        conn._pending[0] = welcome_fut
        conn._reader = loop.create_task(conn._read())
        try:
            await conn._send(Hello(v=PROTOCOL_VERSION, agent="plauder-python"))
            async with asyncio.timeout_at(deadline):
                frame = await welcome_fut
        except TimeoutError as exc:
            await conn.close()
            raise ConnectionLost(f"{server} did not welcome us in time") from exc
        except ConnectionLost:
            await conn.close()
            raise
        if not isinstance(frame, Welcome):
            await conn.close()
            raise ConnectionLost("server did not welcome us")
        conn.welcome = frame
        return conn

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._reader is None or self._reader.done()

    async def wait_closed(self) -> None:
        """Return when the connection has ended."""
        if self._reader is not None:
            await asyncio.shield(self._reader)

    async def _send(self, frame: ClientFrame) -> None:
        try:
            await self._ws.send_bytes(codec.encode(frame))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise ConnectionLost(str(exc)) from exc

    async def request(self, frame: ClientFrame, timeout: float = 30.0) -> ServerFrame:
        """Send a request (with its `id`) and return the answer, raising ServerError."""
        rid: int = frame.id  # type: ignore[union-attr]
        fut: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            if self.closed:
                raise ConnectionLost("connection closed")
            await self._send(frame)
            async with asyncio.timeout(timeout):
                answer = await fut
        except TimeoutError as exc:
            raise ConnectionLost("no answer from the server in time") from exc
        finally:
            self._pending.pop(rid, None)
        if isinstance(answer, Error):
            raise ServerError(answer.code, answer.message)
        return answer

    async def send_raw(self, data: bytes) -> None:
        """Send already encoded bytes (tests of bad input use this)."""
        try:
            await self._ws.send_bytes(data)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise ConnectionLost(str(exc)) from exc

    async def close(self) -> None:
        """Close the WebSocket."""
        await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    frame = codec.decode_server(msg.data)
                except codec.ProtocolError:
                    continue
                welcome = isinstance(frame, Welcome)
                rid = 0 if welcome else getattr(frame, "id", 0)
                fut = self._pending.get(rid) if (rid or welcome) else None
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                else:
                    self._on_push(frame)
        finally:
            self.close_code = self._ws.close_code
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(f"connection closed ({self.close_code})"))
