"""Presence across nodes: online counts per node in Redis, changes announced on one channel."""

import asyncio
import logging

import msgspec

from plauder.server.cluster import wire
from plauder.server.cluster.link import RedisLink
from plauder.server.errors import ClusterUnavailable
from plauder.server.presence import Notify

log = logging.getLogger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Set this node's count of the account's devices (KEYS[2]); return the account's
# devices on every live node (a member of KEYS[1] whose expiry is ahead).
_CHANGE = (
    """
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], n)
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
"""
    + _NOW_MS
    + """
local total = n
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if node ~= ARGV[3] then
    total = total + tonumber(redis.call('HGET', ARGV[4] .. node, ARGV[1]) or '0')
  end
end
return total
"""
)

_ONLINE = (
    _NOW_MS
    + """
local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local out = {}
for i = 2, #ARGV do
  local on = 0
  for _, node in ipairs(nodes) do
    if tonumber(redis.call('HGET', ARGV[1] .. node, ARGV[i]) or '0') > 0 then
      on = 1
      break
    end
  end
  out[#out + 1] = on
end
return out
"""
)

# Replace this node's counts (KEYS[1]) by ARGV[2..]: number, count, number, count...
_RESTORE = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisPresence:
    """The cluster's online counts: each node keeps its own, expiring with the node.

    A node writes its own count of an account's devices as an absolute value,
    its writes one at a time in the order of the changes, and all of them
    again on every heartbeat and reconnection, so Redis converges on the
    node's own counts whatever was lost. While Redis is unreachable, the node
    answers from its own counts and tells its own watchers only.
    """

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._names = link.names
        self._key = link.names.online(link.node)
        self._counts: dict[str, int] = {}  # this node's devices online, per number
        self._writes = asyncio.Lock()  # fair: writes reach Redis in the order of the changes
        self._notify: Notify | None = None
        self._change = link.script(_CHANGE)
        self._online = link.script(_ONLINE)
        self._restore = link.script(_RESTORE)
        link.route(link.names.presence, self._on_note)
        link.subscribe(link.names.presence)
        link.on_connect(self._write_back)
        link.on_heartbeat(self._write_back)

    def listen(self, notify: Notify) -> None:
        """Call notify for changes announced anywhere."""
        self._notify = notify

    async def up(self, number: str) -> bool:
        """Count a device here; True if the account had none online anywhere."""
        return await self._count(number, self._counts.get(number, 0) + 1) == 1

    async def down(self, number: str) -> bool:
        """Uncount a device here; True if the account has none online anywhere now."""
        return await self._count(number, self._counts.get(number, 0) - 1) == 0

    async def online(self, numbers: list[str]) -> list[bool]:
        """Whether each account has a device online on any live node."""
        if not numbers:
            return []
        try:
            found = await self._link.run(
                self._online, [self._names.nodes], [self._names.online_prefix, *numbers]
            )
            return [bool(int(x)) for x in found]
        except ClusterUnavailable:
            return [number in self._counts for number in numbers]

    async def announce(self, number: str, changed_visibility: bool) -> None:
        """Tell this node's watchers now and every other node's through the presence channel."""
        if self._notify is not None:
            await self._notify(number, changed_visibility)
        note = wire.PresenceNote(
            node=self._link.node, number=number, changed_visibility=changed_visibility
        )
        self._link.publish(self._names.presence, wire.encode(note))

    async def _count(self, number: str, local: int) -> int:
        """Set this node's count; returns the account's devices online anywhere."""
        if local > 0:
            self._counts[number] = local
        else:
            self._counts.pop(number, None)
            local = 0
        try:
            async with self._writes:
                total = await self._link.run(
                    self._change,
                    [self._names.nodes, self._key],
                    [number, local, self._link.node, self._names.online_prefix, self._ttl],
                )
            return int(total)
        except ClusterUnavailable:
            return local

    @property
    def _ttl(self) -> int:
        return self._link.node_ttl_ms

    async def _on_note(self, channel: bytes, data: bytes) -> None:
        try:
            note = wire.decode_presence(data)
        except msgspec.DecodeError:
            log.warning("ignored a malformed presence note")
            return
        if note.node != self._link.node and self._notify is not None:
            await self._notify(note.number, note.changed_visibility)

    async def _write_back(self) -> None:
        """Write all of this node's counts (after a reconnection, and every heartbeat)."""
        async with self._writes:
            flat = [x for number, count in self._counts.items() for x in (number, count)]
            await self._link.run(self._restore, [self._key], [self._ttl, *flat])
