"""Message traffic between pairs of bench clients: closed loop (W in flight) or paced.

A message is a `send` with one type-1 envelope whose body is 200 opaque bytes: an
8-byte timestamp (CLOCK_MONOTONIC, the same in every process) and random bytes. The
server cannot tell it from Olm ciphertext. Receivers ack as the SDK does: at most
one `ack` per ACK_INTERVAL (the first at once), or at once when ACK_BATCH eids wait.
"""

import asyncio
import contextlib
import math
import random
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

from bench.wire import OnFrame, Wire, WireError
from plauder.client.inbox import ACK_BATCH, ACK_INTERVAL
from plauder.protocol import codec
from plauder.protocol.frames import Ack, Envelope, Error, OutEnvelope, Send, Sent, ServerFrame

BODY_BYTES = 200
MAX_PACED_IN_FLIGHT = 1000  # per sender: beyond this a paced sender skips (and counts) sends


@dataclass
class _Sender:
    wire: Wire
    peer: str
    slots: asyncio.Semaphore
    times: dict[int, int] = field(default_factory=dict)


class Acker:
    """Acks one connection's envelopes as the SDK does: at most one `ack` per interval.

    The first ack of a quiet connection goes out once the reader drained what it read,
    later ones when `interval` s passed since the previous `ack`, or as soon as
    ACK_BATCH eids wait; `flush` acks everything at once (phase ends).
    """

    def __init__(self, wire: Wire, interval: float = ACK_INTERVAL) -> None:
        self.wire = wire
        self.interval = interval
        self.eids: list[int] = []
        self._last = -math.inf  # monotonic time of the last `ack`
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None  # set to end the wait for the interval

    def add(self, eid: int) -> None:
        """Queue an eid; it is acked once the reader has drained what it read and is due."""
        self.eids.append(eid)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        elif len(self.eids) >= ACK_BATCH and self._wake is not None:
            _wake(self._wake)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.eids:
            wait = self._last + self.interval - time.monotonic()
            if wait <= 0 or len(self.eids) >= ACK_BATCH:
                await self.flush()
                continue
            self._wake = wake = loop.create_future()
            timer = loop.call_later(wait, _wake, wake)
            try:
                await wake
            finally:
                timer.cancel()
                self._wake = None

    async def flush(self) -> None:
        """Ack everything queued so far now, at most ACK_BATCH eids per `ack` (phase ends)."""
        while self.eids:
            eids, self.eids = self.eids[:ACK_BATCH], self.eids[ACK_BATCH:]
            self._last = time.monotonic()
            await self.wire.send(Ack(id=self.wire.next_id(), eids=eids))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def ticks(start_ns: int, rate: float, total: int) -> AsyncIterator[int]:
    """Yield the due times (monotonic ns) of `total` events at `rate`/s, each when due."""
    step = 1e9 / rate
    for k in range(total):
        due = start_ns + int(k * step)
        now = time.monotonic_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
        yield due


class Traffic:
    """One run of messages from each sender to its receiver, with latency samples."""

    def __init__(
        self,
        pairs: list[tuple[Wire, str, Wire]],
        in_flight: int,
        ack_interval: float = ACK_INTERVAL,
    ) -> None:
        self.senders = [_Sender(s, peer, asyncio.Semaphore(in_flight)) for s, peer, _ in pairs]
        self.receivers = [Acker(r, ack_interval) for _, _, r in pairs]
        self.deliver_ms = array("d")  # send (or its scheduled time) to receipt
        self.commit_ms = array("d")  # send (or its scheduled time) to `sent`
        self.lag_ms = array("d")  # paced: how late the generator sent after the schedule
        self.errors: Counter[str] = Counter()
        self.sent = self.answered = self.received = self.skipped = 0
        self.first_ns = self.last_ns = 0
        self._outstanding = 0
        self._done = asyncio.Event()
        for s in self.senders:
            s.wire.on_frame = self._sender_handler(s)
        for r in self.receivers:
            r.wire.on_frame = self._receiver_handler(r)

    # --- driving ---------------------------------------------------------------------

    async def closed_loop(self, messages: int, timeout: float) -> None:
        """Each sender sends `messages`, keeping its in-flight window full."""
        self._expect(messages * len(self.senders))
        self.first_ns = time.monotonic_ns()
        loops = [self._sender_loop(s, messages) for s in self.senders]
        await self._finish(asyncio.gather(*loops), timeout)

    async def paced(self, rate: float, duration: float, timeout: float) -> None:
        """Send `rate` messages/s in total, round robin over the senders, for `duration` s."""
        total = max(1, round(rate * duration))
        self._expect(total)
        self.first_ns = start = time.monotonic_ns()
        await self._finish(self._pacer(start, rate, total), timeout)

    def _expect(self, messages: int) -> None:
        self._outstanding = 2 * messages  # one `sent` and one envelope each
        if not messages:
            self._done.set()

    async def _finish(self, sending: Awaitable[object], timeout: float) -> None:
        async def everything() -> None:
            await sending
            await self._done.wait()

        try:
            await asyncio.wait_for(everything(), timeout)
        except TimeoutError:
            self.errors["timeout"] += 1
        for r in self.receivers:
            with contextlib.suppress(WireError):
                await r.flush()

    async def _sender_loop(self, s: _Sender, messages: int) -> None:
        for _ in range(messages):
            await s.slots.acquire()
            await self._send(s, time.monotonic_ns())

    async def _pacer(self, start: int, rate: float, total: int) -> None:
        senders = self.senders
        k = 0
        async for due in ticks(start, rate, total):
            s = senders[k % len(senders)]
            k += 1
            if len(s.times) >= MAX_PACED_IN_FLIGHT:
                self.skipped += 1
                self._settle(2)
                continue
            self.lag_ms.append((time.monotonic_ns() - due) / 1e6)
            await self._send(s, due)

    async def _send(self, s: _Sender, stamp: int) -> None:
        rid = s.wire.next_id()
        s.times[rid] = stamp
        body = stamp.to_bytes(8, "big") + random.randbytes(BODY_BYTES - 8)
        env = OutEnvelope(to=s.peer, device_id=1, type=1, body=body)
        self.sent += 1
        await s.wire.send_bytes(
            codec.encode(Send(id=rid, cmid=random.randbytes(16), envelopes=[env]))
        )

    def _settle(self, n: int) -> None:
        self._outstanding -= n
        if self._outstanding <= 0:
            self.last_ns = time.monotonic_ns()
            self._done.set()

    # --- frames from the server --------------------------------------------------------

    def _sender_handler(self, s: _Sender) -> OnFrame:
        def on_frame(frame: ServerFrame) -> None:
            if isinstance(frame, Sent | Error):
                stamp = s.times.pop(frame.id, None)
                if stamp is None:
                    return
                s.slots.release()
                self.answered += 1
                if isinstance(frame, Sent):
                    self.commit_ms.append((time.monotonic_ns() - stamp) / 1e6)
                    self._settle(1)
                else:
                    self.errors[frame.code] += 1
                    self._settle(2)  # nothing will be delivered

        return on_frame

    def _receiver_handler(self, r: Acker) -> OnFrame:
        def on_frame(frame: ServerFrame) -> None:
            if isinstance(frame, Envelope):
                now = time.monotonic_ns()
                stamp = int.from_bytes(frame.body[:8], "big")
                self.deliver_ms.append((now - stamp) / 1e6)
                self.received += 1
                r.add(frame.eid)
                self._settle(1)
            elif isinstance(frame, Error):
                self.errors["ack:" + frame.code] += 1

        return on_frame
