"""A node's link to the cluster's Redis: publish, subscribe, run scripts, stay connected."""

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.retry import Retry

from plauder.server.cluster import resp
from plauder.server.cluster.wire import Names
from plauder.server.errors import ClusterUnavailable

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0  # how often a node renews its entries and checks the connections
NODE_TTL_MS = 15_000  # a silent node's entries vanish this long after its last heartbeat
TIMEOUT_SECONDS = 2.0  # to connect, and for any one command
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0  # seconds between reconnection attempts, doubling
SUBSCRIBE_CHUNK = 1000  # channels per SUBSCRIBE when subscribing again
INBOX_HIGH, INBOX_LOW = 20_000, 2_000  # received messages: stop reading above, resume below
PUBLISH_BUFFER_LIMIT = 8 * 1024 * 1024  # unsent bytes to Redis before publishes are dropped
MAX_LOST = 100_000  # channels remembered for a Resync after an outage

Handler = Callable[[bytes, bytes], Awaitable[None]]  # (channel, message)
Hook = Callable[[], Awaitable[None]]

# Renew this node's membership; forget nodes dead for long (the presence reaper
# takes them off earlier); 1 if this node was not a member (new, reaped, or Redis
# lost its data).
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * tonumber(ARGV[2]))
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
"""


def default_node_id() -> str:
    """A node id unique on the network: host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisLink:
    """Keeps a node connected to Redis and tells its users when that changes.

    Three connections: redis-py's pool for commands and scripts, one lean
    connection that publishes, and one that is subscribed. While Redis is
    unreachable, publishes are dropped (their channels remembered, so the
    receivers can be told to re-read their queues afterwards) and commands
    fail at once with ClusterUnavailable; the link reconnects with back-off,
    subscribes again and runs the `on_connect` hooks.
    """

    def __init__(
        self,
        url: str,
        namespace: str,
        node_id: str = "",
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        node_ttl_ms: int = NODE_TTL_MS,
    ) -> None:
        self.names = Names(namespace)
        self.node = node_id or default_node_id()
        self.heartbeat_seconds = heartbeat_seconds
        self.node_ttl_ms = node_ttl_ms
        self.redis = Redis.from_url(
            url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        self._url = url
        self._tls = resp.tls_context(url)  # built once: loading certificates blocks
        self._beat_script = self.redis.register_script(_HEARTBEAT)
        self._routes: list[tuple[bytes, Handler]] = []
        self._on_connect: list[Hook] = []
        self._on_heartbeat: list[Hook] = []
        self._channels: set[bytes] = set()
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        self._pub: resp.RespConnection | None = None
        self._sub: resp.RespConnection | None = None
        self._inbox: deque[tuple[bytes, bytes]] = deque()
        self._wake = asyncio.Event()
        self._paused = False
        self._lost: set[bytes] = set()
        self._lost_overflow = False
        self._last_pong = 0.0
        self._down_since: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self.up = asyncio.Event()  # set while connected
        self.connected = False
        self.rejoined = False  # the last heartbeat found this node missing from the live ones
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.outages = 0

    # --- set-up by the link's users ----------------------------------------------------

    def route(self, prefix: bytes, handler: Handler) -> None:
        """Hand messages of channels starting with prefix to handler, one at a time, in order."""
        self._routes.append((prefix, handler))

    def on_connect(self, hook: Hook) -> None:
        """Run hook after every (re)connection, once subscribed again."""
        self._on_connect.append(hook)

    def on_heartbeat(self, hook: Hook) -> None:
        """Run hook every heartbeat while connected (to renew expiring entries)."""
        self._on_heartbeat.append(hook)

    def script(self, lua: str) -> AsyncScript:
        """A Lua script to run with `run`."""
        return self.redis.register_script(lua)

    # --- use ---------------------------------------------------------------------------

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a script; raises ClusterUnavailable at once while Redis is unreachable."""
        if not self.connected:
            raise ClusterUnavailable("redis is unreachable")
        return await self._command(script, keys, args)

    def publish(self, channel: bytes, payload: bytes) -> None:
        """Publish without waiting; dropped (and remembered) while Redis is unreachable."""
        pub = self._pub
        if self.connected and pub is not None and pub.buffered < PUBLISH_BUFFER_LIMIT:
            pub.publish(channel, payload)
            self.published += 1
        else:
            self.dropped += 1
            self._note_lost(channel)

    def flush(self) -> None:
        """Hand the queued publishes to the socket now (before a `sent` goes out)."""
        if self._pub is not None:
            self._pub.flush()

    def subscribe(self, channel: bytes) -> asyncio.Future[None] | None:
        """Receive the channel from now on; the future resolves when Redis confirms it."""
        self._channels.add(channel)
        sub = self._sub
        if sub is None or not sub.open:
            return None  # subscribed when the link is up again
        sub.send(b"SUBSCRIBE", channel)  # also while (re)connecting: it may have listed them
        return self._confirmation(channel)

    def unsubscribe(self, channel: bytes) -> None:
        """Stop receiving the channel."""
        self._channels.discard(channel)
        sub = self._sub
        if sub is not None and sub.open:
            sub.send(b"UNSUBSCRIBE", channel)

    def take_lost(self) -> tuple[set[bytes], bool]:
        """Channels whose publishes may have been lost since last asked, and whether more were."""
        lost, overflow = self._lost, self._lost_overflow
        self._lost, self._lost_overflow = set(), False
        return lost, overflow

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background; a failure is logged at debug level only."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def stats(self) -> dict[str, int]:
        """Counters for /metrics."""
        return {
            "redis_connected": int(self.connected),
            "redis_outages": self.outages,
            "cluster_published": self.published,
            "cluster_received": self.received,
            "cluster_dropped": self.dropped,
        }

    # --- life --------------------------------------------------------------------------

    async def start(self, wait: float = TIMEOUT_SECONDS) -> None:
        """Start connecting; wait a little for the first connection, but never fail."""
        loop = asyncio.get_running_loop()
        self._consumer = loop.create_task(self._consume())
        self._supervisor = loop.create_task(self._supervise())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self.up.wait()

    async def close(self) -> None:
        """Finish background commands, leave the cluster and close the connections."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=TIMEOUT_SECONDS)
        for task in (self._supervisor, self._consumer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.connected:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    await self.redis.zrem(self.names.nodes, self.node)
                    await self.redis.delete(self.names.online(self.node))
        self.connected = False
        for conn in (self._pub, self._sub):
            if conn is not None:
                conn.close()
        await self.redis.aclose()

    # --- inside ------------------------------------------------------------------------

    async def _command(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                return await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise ClusterUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background redis command failed: %s", task.exception())

    def _confirmation(self, channel: bytes) -> asyncio.Future[None]:
        """A future resolved when Redis confirms the next subscription of channel."""
        fut = self._confirm.get(channel)
        if fut is None or fut.done():
            fut = self._confirm[channel] = asyncio.get_running_loop().create_future()
        return fut

    def _note_lost(self, channel: bytes) -> None:
        if len(self._lost) < MAX_LOST:
            self._lost.add(channel)
        else:
            self._lost_overflow = True

    def _on_push(self, reply: Any) -> None:
        """A reply on the subscribed connection."""
        kind = reply[0]
        if kind == b"message":
            self._inbox.append((reply[1], reply[2]))
            self._wake.set()
            if len(self._inbox) > INBOX_HIGH and not self._paused and self._sub is not None:
                self._paused = True
                self._sub.pause_reading()
        elif kind == b"subscribe":
            fut = self._confirm.pop(reply[1], None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind == b"pong":
            self._last_pong = asyncio.get_running_loop().time()

    async def _consume(self) -> None:
        """Hand received messages to their handlers, in the order they came."""
        inbox = self._inbox
        routes = self._routes
        while True:
            while not inbox:
                self._wake.clear()
                await self._wake.wait()
            channel, data = inbox.popleft()
            self.received += 1
            for prefix, handler in routes:
                if channel.startswith(prefix):
                    try:
                        await handler(channel, data)
                    except Exception:
                        log.exception("handling a cluster message failed")
                    break
            if self._paused and len(inbox) < INBOX_LOW:
                self._paused = False
                if self._sub is not None:
                    self._sub.resume_reading()

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._connect()
                delay = BACKOFF_FIRST
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, ClusterUnavailable | RedisError | OSError | TimeoutError):
                    log.exception("unexpected failure on the redis link")
                await self._down(exc)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect(self) -> None:
        pub = await resp.connect(self._url, self._tls, TIMEOUT_SECONDS)
        self._pub = pub
        sub = await resp.connect(self._url, self._tls, TIMEOUT_SECONDS)
        self._sub = sub
        sub.on_push = self._on_push
        loop = asyncio.get_running_loop()
        self._last_pong = loop.time()
        channels = list(self._channels)
        for i in range(0, len(channels), SUBSCRIBE_CHUNK):
            sub.send(b"SUBSCRIBE", *channels[i : i + SUBSCRIBE_CHUNK])
        if channels:
            last = self._confirmation(channels[-1])
            async with asyncio.timeout(TIMEOUT_SECONDS * 5):
                await asyncio.shield(last)  # confirmations come in order: all are subscribed
        await self._beat()
        self.connected = True
        self.up.set()
        if self._down_since is not None:
            log.info("redis reachable again after %.1f s", loop.time() - self._down_since)
            self._down_since = None
        for hook in self._on_connect:
            await hook()

    async def _watch(self) -> None:
        """Return (by raising) when a connection is lost or Redis stops answering."""
        pub, sub = self._pub, self._sub
        assert pub is not None and sub is not None
        loop = asyncio.get_running_loop()
        while True:
            done, _ = await asyncio.wait(
                [pub.lost, sub.lost],
                timeout=self.heartbeat_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if done:
                raise ClusterUnavailable("redis connection lost")
            if loop.time() - self._last_pong > 3 * self.heartbeat_seconds:
                raise ClusterUnavailable("redis stopped answering")
            sub.send(b"PING")
            await self._beat()
            for hook in self._on_heartbeat:
                await hook()

    async def _beat(self) -> None:
        added = await self._command(
            self._beat_script, [self.names.nodes], [self.node, self.node_ttl_ms]
        )
        self.rejoined = bool(int(added))

    async def _down(self, exc: BaseException) -> None:
        self.connected = False
        self.up.clear()
        if self._pub is not None:
            for channel in self._pub.unconfirmed():
                self._note_lost(channel)
        for conn in (self._pub, self._sub):
            if conn is not None:
                conn.close()
        self._pub = self._sub = None
        self._paused = False
        for fut in self._confirm.values():
            if not fut.done():
                fut.set_result(None)  # nobody waits for a dead connection
        self._confirm.clear()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.connection_pool.disconnect()
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            self.outages += 1
            log.warning(
                "redis unreachable (%s): serving on; messages between nodes wait for it", exc
            )
