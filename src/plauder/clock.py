"""Time as an injectable dependency, so expiry and rate limits can be tested."""

import time
from typing import Protocol


class Clock(Protocol):
    """Where plauder reads the time."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests, simulations)."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = now_ms
        self._mono = 1000.0

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        return self._now_ms

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._now_ms += int(seconds * 1000)
        self._mono += seconds
