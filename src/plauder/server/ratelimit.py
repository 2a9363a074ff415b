"""Token buckets for per-connection and per-key rate limits."""

from typing import Protocol

from plauder.clock import Clock


class TokenBucket:
    """Allows `rate` events per second on average and `burst` at once."""

    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(self, clock: Clock, rate: float, burst: float) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = clock.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        """Spend tokens if there are enough; False means the event is over the limit."""
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def full(self) -> bool:
        """True when the bucket has refilled completely (it can be forgotten)."""
        now = self._clock.monotonic()
        return self._tokens + (now - self._stamp) * self._rate >= self._burst


class KeyLimiter(Protocol):
    """A limit per key (a phone number, say), in this process or shared by a cluster."""

    async def take(self, key: str) -> bool:
        """Count one event of the key; False means it is over the limit.

        Raises ClusterUnavailable when a shared limit cannot be checked.
        """
        ...


class KeyedLimiter:
    """One token bucket per key (a phone number, say), forgetting idle keys."""

    def __init__(self, clock: Clock, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    async def take(self, key: str) -> bool:
        """Spend one token of this key's bucket; False means over the limit."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._prune()
            bucket = self._buckets[key] = TokenBucket(self._clock, self._rate, self._burst)
        return bucket.take()

    def _prune(self) -> None:
        for key in [k for k, b in self._buckets.items() if b.full()]:
            del self._buckets[key]
