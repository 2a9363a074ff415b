"""The common part of every load generator: its accounts, registration and connections."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import aiohttp

from bench.accounts import Identity, authenticate, register
from bench.wire import Wire
from bench.workers import Args, Commands
from plauder.client.inbox import ACK_INTERVAL

T = TypeVar("T")
MAX_ERRORS_KEPT = 5


async def run_bounded(
    items: Iterable[T], work: Callable[[T], Awaitable[None]], concurrency: int, timeout: float
) -> tuple[int, list[str]]:
    """Run work(item) for every item, `concurrency` at once; returns (successes, errors)."""
    it = iter(items)
    errors: list[str] = []
    done = 0

    async def lane() -> None:
        nonlocal done
        for item in it:
            try:
                await work(item)
                done += 1
            except Exception as exc:
                errors.append(repr(exc))

    lanes = [asyncio.ensure_future(lane()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.wait_for(asyncio.gather(*lanes), timeout)
    except TimeoutError:
        errors.append(f"timed out after {timeout:.0f} s")
    finally:
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
    return done, errors


class LoadWorker(Commands):
    """Owns some bench accounts; registers them and holds their authenticated connections.

    The spec holds `collector` (URL), `salt` (bytes), `indices` (account numbers) and
    `ack_interval` (seconds between one connection's `ack`s); the server's `ws_url` comes
    with each command, as a restarted server has a new port.
    """

    def __init__(self, spec: Args) -> None:
        self.spec = spec
        self.collector: str = spec["collector"]
        self.idents = {i: Identity(i, spec["salt"]) for i in spec["indices"]}
        self.ack_interval: float = spec.get("ack_interval", ACK_INTERVAL)
        self.wires: dict[int, Wire] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP/WebSocket session (no connection limit)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                timeout=aiohttp.ClientTimeout(total=None, connect=30.0),
            )
        return self._session

    async def cmd_register(self, ws_url: str, concurrency: int, timeout: float) -> Args:
        """Register every account of this worker."""

        async def one(ident: Identity) -> None:
            await register(self.session, ws_url, self.collector, ident)

        start = time.monotonic_ns()
        done, errors = await run_bounded(self.idents.values(), one, concurrency, timeout)
        return _timed(start, done, errors)

    async def cmd_connect(
        self,
        ws_url: str,
        concurrency: int,
        timeout: float,
        urls: dict[int, str] | None = None,
        only: list[int] | None = None,
    ) -> Args:
        """Open and authenticate one connection per account; keeps them open.

        `urls` sends some accounts (by index) to another node than `ws_url`; `only`
        connects just these accounts (of this worker's).
        """
        latencies: list[float] = []
        urls = urls or {}

        async def one(ident: Identity) -> None:
            t0 = time.monotonic_ns()
            wire = await Wire.open(self.session, urls.get(ident.index, ws_url))
            self.attach(ident.index, wire)
            try:
                await authenticate(wire, ident)
            except BaseException:
                await wire.close()
                raise
            self.wires[ident.index] = wire
            latencies.append((time.monotonic_ns() - t0) / 1e6)

        start = time.monotonic_ns()
        wanted = self.idents.keys() if only is None else set(only) & self.idents.keys()
        todo = [self.idents[n] for n in wanted if n not in self.wires]
        done, errors = await run_bounded(todo, one, concurrency, timeout)
        result = _timed(start, done, errors)
        result["latency_ms"] = latencies
        return result

    def attach(self, index: int, wire: Wire) -> None:
        """Called for each new connection before it authenticates (to see every push)."""

    async def cmd_disconnect(self, timeout: float = 60.0) -> Args:
        """Close every connection."""
        wires, self.wires = list(self.wires.values()), {}
        start = time.monotonic_ns()
        await asyncio.wait_for(
            asyncio.gather(*(w.close() for w in wires), return_exceptions=True), timeout
        )
        return _timed(start, len(wires), [])

    async def close(self) -> None:
        """Close connections and the session."""
        if self.wires:
            await self.cmd_disconnect()
        if self._session is not None:
            await self._session.close()


def _timed(start_ns: int, done: int, errors: list[str]) -> Args:
    return {
        "done": done,
        "failed": len(errors),
        "errors": errors[:MAX_ERRORS_KEPT],
        "start_ns": start_ns,
        "end_ns": time.monotonic_ns(),
    }
