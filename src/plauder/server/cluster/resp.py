"""A lean Redis connection for the hot path: commands written per loop turn, parsed by hiredis.

redis-py's asyncio client spends about 200 µs of CPU per command and 22 µs
per received pub/sub message here; this connection spends about 2 µs for
either (docs/architecture.md), which matters at thousands of messages per
second on a small machine. It is used for PUBLISH and for the subscribed
connection only; everything else goes through redis-py.
"""

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url

from plauder.server.errors import ClusterUnavailable


class RespConnection(asyncio.Protocol):
    """One Redis connection speaking RESP2.

    Replies are matched in order to `call` futures or to `publish`es (whose
    channel is kept until confirmed), unless `on_push` is set: then every
    reply goes there (a subscribed connection's messages).
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._waiting: deque[asyncio.Future[Any] | bytes] = deque()
        self.on_push: Callable[[Any], None] | None = None
        self.lost: asyncio.Future[None] = self._loop.create_future()

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Parse every complete reply and hand it on."""
        reader = self._reader
        try:
            reader.feed(data)
            push = self.on_push
            while (reply := reader.gets()) is not False:
                if push is not None:
                    push(reply)
                else:
                    self._answer(reply)
        except hiredis.ProtocolError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail whatever waits for a reply."""
        self._transport = None
        for item in self._waiting:
            if isinstance(item, asyncio.Future) and not item.done():
                item.set_exception(ClusterUnavailable("redis connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    # --- writing -----------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Whether the connection is still up."""
        return self._transport is not None

    def send(self, *args: bytes | str | int) -> None:
        """Queue a command whose replies go to `on_push`; written at the end of the loop turn."""
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(hiredis.pack_command(args))  # type: ignore[arg-type]

    def publish(self, channel: bytes, payload: bytes) -> None:
        """Queue a PUBLISH; its channel counts as unconfirmed until Redis answers."""
        self.send(b"PUBLISH", channel, payload)
        self._waiting.append(channel)

    def call(self, *args: bytes | str | int) -> asyncio.Future[Any]:
        """Queue a command; the future gets its reply (or ClusterUnavailable)."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self._transport is None:
            fut.set_exception(ClusterUnavailable("redis connection lost"))
            return fut
        self.send(*args)
        self._waiting.append(fut)
        return fut

    def unconfirmed(self) -> list[bytes]:
        """Channels of publishes Redis has not confirmed (possibly lost with the connection)."""
        return [item for item in self._waiting if isinstance(item, bytes)]

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""
        t = self._transport
        return t.get_write_buffer_size() if t is not None else 0

    def pause_reading(self) -> None:
        """Stop reading (Redis buffers for us, up to its output limit)."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again."""
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    def flush(self) -> None:
        """Write what is queued now rather than at the end of the loop turn."""
        self._flush()

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and out:
            self._transport.write(b"".join(out))

    def _answer(self, reply: Any) -> None:
        if not self._waiting:
            return  # nothing asked: ignore
        item = self._waiting.popleft()
        if isinstance(item, asyncio.Future) and not item.done():
            if isinstance(reply, hiredis.ReplyError):
                item.set_exception(ClusterUnavailable(f"redis refused: {reply}"))
            else:
                item.set_result(reply)


def tls_context(url: str) -> ssl.SSLContext | None:
    """The TLS settings for a rediss:// URL (the system's certificate checks), else None."""
    return ssl.create_default_context() if url.startswith("rediss://") else None


async def connect(url: str, context: ssl.SSLContext | None, timeout: float) -> RespConnection:
    """Open a connection to the Redis of a redis://, rediss:// or unix:// URL and log in."""
    params: dict[str, Any] = dict(parse_url(url))
    loop = asyncio.get_running_loop()
    conn: RespConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            if "path" in params:
                _, conn = await loop.create_unix_connection(RespConnection, params["path"])
            else:
                _, conn = await loop.create_connection(
                    RespConnection,
                    params.get("host", "localhost"),
                    params.get("port", 6379),
                    ssl=context,
                )
            if params.get("password"):
                login = [params["password"]]
                if params.get("username"):
                    login.insert(0, params["username"])
                await conn.call(b"AUTH", *login)
            await conn.call(b"PING")
    except (OSError, TimeoutError, ClusterUnavailable) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, ClusterUnavailable):
            raise
        raise ClusterUnavailable(f"cannot reach redis: {type(exc).__name__}: {exc}") from exc
    return conn
