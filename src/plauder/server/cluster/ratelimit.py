"""Rate limits shared by the nodes of a cluster, kept in Redis."""

from plauder.server.cluster.link import RedisLink

# GCRA: the key holds the theoretical arrival time (ms) of the next event at the
# average rate; an event is allowed while that time is at most `burst` intervals
# ahead. One script, so concurrent nodes cannot both take the last slot.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local next_tat = tat + interval
if next_tat - now > interval * tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil(next_tat - now))
return 1
"""


class RedisLimiter:
    """`rate` events per second per key on average and `burst` at once, across all nodes.

    Fails closed: while Redis is unreachable, `take` raises ClusterUnavailable.
    """

    def __init__(self, link: RedisLink, name: str, rate: float, burst: int) -> None:
        self._link = link
        self._name = name
        self._interval_ms = 1000.0 / rate
        self._burst = burst
        self._script = link.script(_TAKE)

    async def take(self, key: str) -> bool:
        """Count one event of the key; False means it is over the limit."""
        allowed = await self._link.run(
            self._script,
            [self._link.names.limit(self._name, key)],
            [repr(self._interval_ms), self._burst],
        )
        return bool(int(allowed))
