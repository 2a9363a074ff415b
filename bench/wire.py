"""A minimal plauder client on aiohttp: hello/welcome, requests by id, pushes to a callback."""

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp

from plauder.protocol import codec
from plauder.protocol.frames import ClientFrame, Error, Hello, ServerFrame, Welcome
from plauder.protocol.limits import PROTOCOL_VERSION

OnFrame = Callable[[ServerFrame], None]


class WireError(RuntimeError):
    """The server answered with an error (its `code`), or the connection failed."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def _ignore(frame: ServerFrame) -> None:
    """Default push handler."""


class Wire:
    """One WebSocket speaking plauder frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.welcome: Welcome | None = None
        self.on_frame: OnFrame = _ignore
        self._pending: dict[int, asyncio.Future[ServerFrame]] = {}
        self._ids = itertools.count(1)
        self._welcomed: asyncio.Future[Welcome] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, ws_url: str, timeout: float = 30.0
    ) -> "Wire":
        """Connect, say hello and wait for `welcome`."""
        try:
            ws = await session.ws_connect(
                ws_url,
                autoping=True,
                max_msg_size=0,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise WireError(f"cannot connect: {exc!r}") from exc
        wire = cls(ws)
        try:
            await wire.send(Hello(v=PROTOCOL_VERSION, agent="plauder-bench"))
            wire.welcome = await asyncio.wait_for(asyncio.shield(wire._welcomed), timeout)
        except BaseException:
            await wire.close()
            raise
        return wire

    def next_id(self) -> int:
        """A request id unique on this connection."""
        return next(self._ids)

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._reader.done()

    async def send(self, frame: ClientFrame) -> None:
        """Encode and send a frame."""
        await self.send_bytes(codec.encode(frame))

    async def send_bytes(self, data: bytes) -> None:
        """Send an already encoded frame."""
        try:
            await self.ws.send_bytes(data)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise WireError(f"send failed: {exc!r}") from exc

    async def request(self, frame: ClientFrame, timeout: float = 30.0) -> ServerFrame:
        """Send a request and return its answer; an `error` answer raises WireError."""
        rid: int = frame.id  # type: ignore[union-attr]
        fut: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            if self.closed:
                raise WireError("connection closed")
            await self.send(frame)
            answer = await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            raise WireError(f"no answer to {type(frame).__name__} in {timeout} s") from exc
        finally:
            self._pending.pop(rid, None)
        if isinstance(answer, Error):
            raise WireError(f"{type(frame).__name__}: {answer.code}: {answer.message}", answer.code)
        return answer

    async def close(self) -> None:
        """Close the WebSocket and wait for the reader to end."""
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        pending = self._pending
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    continue
                frame = codec.decode_server(msg.data)
                rid = getattr(frame, "id", 0)
                fut = pending.pop(rid, None) if rid else None
                if fut is not None:
                    if not fut.done():
                        fut.set_result(frame)
                elif isinstance(frame, Welcome) and not self._welcomed.done():
                    self._welcomed.set_result(frame)
                else:
                    self.on_frame(frame)
        finally:
            err = WireError(f"connection closed ({self.ws.close_code})")
            waiting: list[asyncio.Future[Any]] = [self._welcomed, *pending.values()]
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_exception(err)
            pending.clear()
            if not self._welcomed.cancelled():
                self._welcomed.exception()  # mark retrieved: nobody may wait any more
