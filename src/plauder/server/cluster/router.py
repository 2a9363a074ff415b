"""Delivery across nodes: each device's channel is subscribed by the node holding its connection."""

import asyncio
import logging

import msgspec

from plauder.server.cluster import wire
from plauder.server.cluster.link import TIMEOUT_SECONDS, RedisLink
from plauder.server.errors import ClusterUnavailable
from plauder.server.router import Receiver

log = logging.getLogger(__name__)

REFRESH_CHUNK = 500  # registry entries renewed per script call
CLAIM_CHUNK = 100  # registry entries claimed at once after an outage

# The device's registry entry gets a generation above every earlier one, even after
# Redis lost its data: the counter never falls behind Redis's clock in microseconds.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local gen = redis.call('INCR', KEYS[1])
if gen < now then
  gen = now
  redis.call('SET', KEYS[1], string.format('%d', now))
end
redis.call('SET', KEYS[2], string.format('%d', gen) .. ':' .. ARGV[1], 'PX', ARGV[2])
return gen
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Renew this node's entries (KEYS, with their generations in ARGV[3..]); put back
# missing ones; return the positions of those another node has claimed since.
_RENEW = """
local superseded = {}
for i, key in ipairs(KEYS) do
  local mine = ARGV[i + 2] .. ':' .. ARGV[1]
  local held = redis.call('GET', key)
  if held == mine then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif held and tonumber(string.match(held, '^(%d+):')) > tonumber(ARGV[i + 2]) then
    superseded[#superseded + 1] = i
  else
    redis.call('SET', key, mine, 'PX', ARGV[2])
  end
end
return superseded
"""


class _Held:
    """A connection this node holds, and the generation of its registry entry."""

    __slots__ = ("claiming", "conn", "gen", "seen")

    def __init__(self, conn: Receiver) -> None:
        self.conn = conn
        self.gen = 0  # 0: not claimed yet (Redis was unreachable, or the claim is on its way)
        self.seen = 0  # highest takeover generation heard while unclaimed
        self.claiming = False


class RedisRouter:
    """Routes to connections of this node directly and to those of other nodes through Redis.

    A stored envelope is offered to a local feed at once, or published on the
    device's channel; the node holding the device offers it to its feed. A
    message lost on the way is found in the store by the next resync: after
    every reconnection to Redis, and every `resync_seconds` for each device.
    """

    def __init__(self, link: RedisLink, resync_seconds: float) -> None:
        self._link = link
        self._names = link.names
        self._node = link.node
        self._held: dict[int, _Held] = {}
        self._resync_seconds = resync_seconds
        self._claim_script = link.script(_CLAIM)
        self._release_script = link.script(_RELEASE)
        self._renew_script = link.script(_RENEW)
        self._ticker: asyncio.Task[None] | None = None
        self._evictions: set[int] = set()  # devices evicted while Redis was unreachable
        self.resyncs = 0
        link.route(self._names.device_prefix, self._on_message)
        link.on_connect(self._reconnected)
        link.on_heartbeat(self._renew)

    # --- Router ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the periodic resync."""
        self._ticker = asyncio.get_running_loop().create_task(self._resync_forever())

    async def close(self) -> None:
        """Stop the periodic resync."""
        if self._ticker is not None:
            self._ticker.cancel()

    async def attach(self, device_pk: int, conn: Receiver) -> None:
        """Hold the device's connection here; its connection on any other node closes."""
        old = self._held.get(device_pk)
        held = self._held[device_pk] = _Held(conn)
        if old is not None and old.conn is not conn:
            await old.conn.replaced()
        if old is None:
            confirmed = self._link.subscribe(self._names.device_channel(device_pk))
            if confirmed is not None:
                # the feed reads the store after this: whatever is committed later is
                # published on a channel this node already hears
                await asyncio.wait([confirmed], timeout=TIMEOUT_SECONDS)
        await self._claim(device_pk, held)

    def detach(self, device_pk: int, conn: Receiver) -> None:
        """Forget conn if it still holds the device, and release the registry entry."""
        held = self._held.get(device_pk)
        if held is None or held.conn is not conn:
            return
        del self._held[device_pk]
        self._link.unsubscribe(self._names.device_channel(device_pk))
        if held.gen:
            self._link.spawn(self._release(device_pk, held.gen))

    async def evict(self, device_pk: int) -> None:
        """Close the device's connection here and on every other node."""
        held = self._held.get(device_pk)
        if held is not None:
            self._drop(device_pk, held)
        if not self._link.connected:
            self._evictions.add(device_pk)  # told when Redis is back
        self._link.publish(self._names.device_channel(device_pk), wire.encode(wire.Evict()))

    async def deliver(self, device_pk: int, eid: int, data: bytes) -> None:
        """Offer a stored envelope to the local feed, or publish it to the node holding it."""
        held = self._held.get(device_pk)
        if held is not None:
            feed = held.conn.feed
            if feed is not None:
                await feed.offer(eid, data)
            return
        self._link.publish(
            self._names.device_channel(device_pk), wire.encode(wire.Stored(eid=eid, data=data))
        )

    async def push(self, device_pk: int, data: bytes) -> None:
        """Push an unstored frame to the local connection, or publish it."""
        held = self._held.get(device_pk)
        if held is not None:
            await held.conn.push(data)
            return
        self._link.publish(
            self._names.device_channel(device_pk), wire.encode(wire.Ephemeral(data=data))
        )

    def flush(self) -> None:
        """Write the publishes queued so far to Redis now."""
        self._link.flush()

    def stats(self) -> dict[str, int]:
        """The link's counters and the resyncs."""
        return {**self._link.stats(), "cluster_resyncs": self.resyncs}

    def __len__(self) -> int:
        """Devices whose connection is on this node."""
        return len(self._held)

    # --- the registry ------------------------------------------------------------------

    async def _claim(self, device_pk: int, held: _Held) -> None:
        """Give the device's registry entry a new generation; tell other holders to close."""
        if held.claiming:
            return
        held.claiming = True
        try:
            gen = int(
                await self._link.run(
                    self._claim_script,
                    [self._names.generation, self._names.device_key(device_pk)],
                    [self._node, self._link.node_ttl_ms],
                )
            )
        except ClusterUnavailable:
            return  # claimed by the next heartbeat or reconnection
        finally:
            held.claiming = False
        if self._held.get(device_pk) is not held:  # closed meanwhile
            self._link.spawn(self._release(device_pk, gen))
            return
        held.gen = gen
        channel = self._names.device_channel(device_pk)
        self._link.publish(channel, wire.encode(wire.Takeover(gen=gen, node=self._node)))
        if held.seen > gen:
            self._drop(device_pk, held)

    async def _release(self, device_pk: int, gen: int) -> None:
        await self._link.run(
            self._release_script, [self._names.device_key(device_pk)], [f"{gen}:{self._node}"]
        )

    async def _renew(self) -> None:
        """Renew this node's registry entries, claim unclaimed ones, close superseded ones."""
        unclaimed = [(pk, held) for pk, held in self._held.items() if not held.gen]
        for i in range(0, len(unclaimed), CLAIM_CHUNK):
            await asyncio.gather(*(self._claim(pk, h) for pk, h in unclaimed[i : i + CLAIM_CHUNK]))
        items = [(pk, held) for pk, held in self._held.items() if held.gen]
        for i in range(0, len(items), REFRESH_CHUNK):
            chunk = items[i : i + REFRESH_CHUNK]
            superseded = await self._link.run(
                self._renew_script,
                [self._names.device_key(pk) for pk, _ in chunk],
                [self._node, self._link.node_ttl_ms, *(held.gen for _, held in chunk)],
            )
            for position in superseded:
                device_pk, held = chunk[int(position) - 1]
                if self._held.get(device_pk) is held:
                    self._drop(device_pk, held)

    def _drop(self, device_pk: int, held: _Held) -> None:
        """Close a connection that gives way; its entry belongs to someone else now.

        The close runs on its own: its handshake may wait seconds for a dead
        peer, and the messages of every other device must not wait behind it.
        """
        if self._held.get(device_pk) is held:
            del self._held[device_pk]
            self._link.unsubscribe(self._names.device_channel(device_pk))
        self._link.spawn(held.conn.replaced())

    # --- messages and resync -----------------------------------------------------------

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        """A message on a device channel this node subscribed."""
        try:
            device_pk = int(channel[len(self._names.device_prefix) :])
            message = wire.decode_device(data)
        except (ValueError, msgspec.DecodeError):
            log.warning("ignored a malformed cluster message")
            return
        held = self._held.get(device_pk)
        if held is None:
            return  # the connection went away meanwhile
        match message:
            case wire.Stored(eid=eid, data=frame):
                feed = held.conn.feed
                if feed is not None:
                    await feed.offer(eid, frame)
            case wire.Ephemeral(data=frame):
                await held.conn.push(frame)
            case wire.Takeover(gen=gen, node=node):
                if node == self._node:
                    return  # this node replaces its own connections in attach
                if not held.gen:
                    held.seen = max(held.seen, gen)
                elif gen > held.gen:
                    self._drop(device_pk, held)
            case wire.Evict():
                self._drop(device_pk, held)
            case wire.Resync():
                self._resync(held)

    def _resync(self, held: _Held) -> None:
        feed = held.conn.feed
        if feed is not None:
            feed.resync()
            self.resyncs += 1

    async def _reconnected(self) -> None:
        """Redis is back: claim and renew entries, re-read every queue, tell what was missed."""
        await self._renew()
        for held in list(self._held.values()):
            self._resync(held)
        evictions, self._evictions = self._evictions, set()
        for device_pk in evictions:
            self._link.publish(self._names.device_channel(device_pk), wire.encode(wire.Evict()))
        lost, overflow = self._link.take_lost()
        prefix = self._names.device_prefix
        resync = wire.encode(wire.Resync())
        for channel in lost:
            if channel.startswith(prefix):
                self._link.publish(channel, resync)
        if overflow:
            log.warning("too many devices missed messages to tell each: the periodic resync will")

    async def _resync_forever(self) -> None:
        """Resync every local feed once per resync_seconds, a slice each second."""
        tick = min(1.0, self._resync_seconds)
        slots = max(1, round(self._resync_seconds / tick))
        turn = 0
        while True:
            await asyncio.sleep(tick)
            turn = (turn + 1) % slots
            for device_pk, held in list(self._held.items()):
                if device_pk % slots == turn:
                    self._resync(held)
