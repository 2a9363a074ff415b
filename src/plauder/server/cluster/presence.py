"""Presence across nodes: online counts per node in Redis, changes announced on one channel."""

import asyncio
import logging

import msgspec

from plauder.server.cluster import wire
from plauder.server.cluster.link import RedisLink
from plauder.server.errors import ClusterUnavailable
from plauder.server.presence import Lost, Notify

log = logging.getLogger(__name__)

ONLINE_TTL_FACTOR = 4  # a node's counts outlive its membership, so another node can reap them

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# A node's online hash maps each number to "<devices>:<account id>".
_DEVICES = """
local function devices(key, number)
  local v = redis.call('HGET', key, number)
  return v and tonumber(string.match(v, '^(%d+)')) or 0
end
"""

# Set this node's count of the account's devices (KEYS[2]); return the account's
# devices on every live node (a member of KEYS[1] whose expiry is ahead).
_CHANGE = (
    _NOW_MS
    + _DEVICES
    + """
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], n .. ':' .. ARGV[6])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local total = n
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if node ~= ARGV[3] then
    total = total + devices(ARGV[4] .. node, ARGV[1])
  end
end
return total
"""
)

_ONLINE = (
    _NOW_MS
    + _DEVICES
    + """
local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local out = {}
for i = 2, #ARGV do
  local on = 0
  for _, node in ipairs(nodes) do
    if devices(ARGV[1] .. node, ARGV[i]) > 0 then
      on = 1
      break
    end
  end
  out[#out + 1] = on
end
return out
"""
)

# Replace this node's counts (KEYS[1]) by ARGV[2..]: number, "<devices>:<account id>", ...
_RESTORE = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

_RENEW = """
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""

# Take every dead node (expired in KEYS[1]) off the live nodes, delete its counts
# and return number, account id, ... of its accounts no live node counts.
_REAP = (
    _NOW_MS
    + _DEVICES
    + """
local gone = {}
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', now))
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
for _, node in ipairs(dead) do
  redis.call('ZREM', KEYS[1], node)
  local held = redis.call('HGETALL', ARGV[1] .. node)
  for i = 1, #held, 2 do
    local total = 0
    for _, other in ipairs(live) do
      total = total + devices(ARGV[1] .. other, held[i])
    end
    if total == 0 then
      gone[#gone + 1] = held[i]
      gone[#gone + 1] = string.match(held[i + 1], ':(%d+)$')
    end
  end
  redis.call('DEL', ARGV[1] .. node)
end
return gone
"""
)


class RedisPresence:
    """The cluster's online counts: each node keeps its own, expiring with the node.

    A node writes its own count of an account's devices as an absolute value,
    its writes one at a time in the order of the changes, and all of them
    again after a reconnection or a failed write, so Redis converges on the
    node's own counts whatever was lost. With every heartbeat a node also
    reaps nodes that stopped beating: their accounts that are online nowhere
    else went offline (`lost`). While Redis is unreachable, the node answers
    from its own counts and tells its own watchers only.
    """

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._names = link.names
        self._key = link.names.online(link.node)
        self._counts: dict[str, int] = {}  # this node's devices online, per number
        self._accounts: dict[str, int] = {}  # their account ids
        self._writes = asyncio.Lock()  # fair: writes reach Redis in the order of the changes
        self._stale = False  # a write failed: write everything again at the next heartbeat
        self._notify: Notify | None = None
        self._lost: Lost | None = None
        self._change = link.script(_CHANGE)
        self._online = link.script(_ONLINE)
        self._restore = link.script(_RESTORE)
        self._renew = link.script(_RENEW)
        self._reap = link.script(_REAP)
        link.route(link.names.presence, self._on_note)
        link.subscribe(link.names.presence)
        link.on_connect(self._write_back)
        link.on_heartbeat(self._heartbeat)

    def listen(self, notify: Notify, lost: Lost) -> None:
        """Call notify for changes announced anywhere, lost for accounts of dead nodes."""
        self._notify = notify
        self._lost = lost

    async def up(self, account_id: int, number: str) -> bool:
        """Count a device here; True if the account had none online anywhere."""
        self._accounts[number] = account_id
        return await self._count(number, self._counts.get(number, 0) + 1) == 1

    async def down(self, account_id: int, number: str) -> bool:
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
        account_id = self._accounts.get(number, 0)
        if local > 0:
            self._counts[number] = local
        else:
            self._counts.pop(number, None)
            self._accounts.pop(number, None)
            local = 0
        try:
            async with self._writes:
                total = await self._link.run(
                    self._change,
                    [self._names.nodes, self._key],
                    [
                        number,
                        local,
                        self._link.node,
                        self._names.online_prefix,
                        self._ttl,
                        account_id,
                    ],
                )
            return int(total)
        except ClusterUnavailable:
            self._stale = True
            return local

    @property
    def _ttl(self) -> int:
        return self._link.node_ttl_ms * ONLINE_TTL_FACTOR

    async def _on_note(self, channel: bytes, data: bytes) -> None:
        try:
            note = wire.decode_presence(data)
        except msgspec.DecodeError:
            log.warning("ignored a malformed presence note")
            return
        if note.node != self._link.node and self._notify is not None:
            await self._notify(note.number, note.changed_visibility)

    async def _heartbeat(self) -> None:
        if self._stale or self._link.rejoined:
            await self._write_back()
        else:
            await self._link.run(self._renew, [self._key], [self._ttl])
        gone = await self._link.run(self._reap, [self._names.nodes], [self._names.online_prefix])
        for i in range(0, len(gone), 2):
            if self._lost is not None:
                await self._lost(int(gone[i + 1]), gone[i].decode())

    async def _write_back(self) -> None:
        """Write all of this node's counts (after a reconnection or a failed write).

        If the node was missing from the live nodes (Redis lost its data, or the
        node was silent long enough to be reaped), watchers of its accounts
        may have been told they went offline: tell them again.
        """
        async with self._writes:
            self._stale = False
            flat = [
                x
                for number, count in self._counts.items()
                for x in (number, f"{count}:{self._accounts.get(number, 0)}")
            ]
            await self._link.run(self._restore, [self._key], [self._ttl, *flat])
        if self._link.rejoined:
            for number in list(self._counts):
                await self.announce(number, False)
