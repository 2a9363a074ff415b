"""A device's feed: queued envelopes first, then live ones, in order, within a window."""

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from plauder.protocol import codec
from plauder.protocol.frames import Drained, Envelope
from plauder.server.storage import Store

log = logging.getLogger(__name__)

PAGE = 100
RECENTLY_ACKED = 4096  # acked eids a feed remembers, to ignore late offers of them


class DeviceFeed:
    """Pushes one device's envelopes over its connection and tracks what is unacked.

    In catch-up mode a pump reads pages from the store; once a page comes back
    short and nothing new arrived meanwhile, the feed goes live and new
    envelopes are pushed straight from memory. A full window, or a slow
    connection, sends it back to catch-up (whose pump waits for the socket to
    drain, so a sender never waits for a slow receiver): the store always
    holds the truth.
    """

    def __init__(
        self,
        store: Store,
        device_pk: int,
        send: Callable[[bytes], Awaitable[bool]],
        writable: Callable[[], bool],
        window: int,
    ) -> None:
        self._store = store
        self._device_pk = device_pk
        self._send = send
        self._writable = writable
        self._window = window
        self._last_eid = 0  # the pump reads after this id
        self._rewind: int | None = None  # read again from here, before the next page
        self._unacked: set[int] = set()
        # acked lately: an offer arriving after its ack (from another node, or a send whose
        # task resumed late) must not push the envelope again
        self._acked: set[int] = set()
        self._acked_order: collections.deque[int] = collections.deque()
        self._live = False
        self._dirty = False
        self._drained_sent = False
        self._pump: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Begin pushing what is queued.

        Nothing is read before: offers and resyncs that come earlier (while the
        router subscribes the device's channel) only mark what to read. A read
        before the subscription could miss an envelope whose notice went out
        before it, and then go live without it.
        """
        self._started = True
        self._kick()

    def close(self) -> None:
        """Stop pushing."""
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()

    @property
    def unacked(self) -> int:
        """Envelopes pushed but not yet acknowledged."""
        return len(self._unacked)

    async def offer(self, eid: int, data: bytes) -> None:
        """A new envelope was stored: push it now if live, else the pump will.

        Envelope ids need not arrive in order: on PostgreSQL, transactions
        commit in any order, and other nodes' offers come through Redis. A
        live feed pushes what it is offered; a feed catching up moves its read
        position back before an id it may have read past.
        """
        if self._closed or eid in self._unacked or eid in self._acked:
            return
        if self._live and len(self._unacked) < self._window and self._writable():
            self._last_eid = max(self._last_eid, eid)
            self._unacked.add(eid)
            if await self._send(data):
                return
            self._unacked.discard(eid)
        self._rewind_to(eid - 1)

    def resync(self) -> None:
        """Read everything still queued again: live offers may have been lost."""
        if not self._closed:
            self._rewind_to(0)

    def _rewind_to(self, position: int) -> None:
        """Go back to catching up, reading again from position at the latest."""
        self._live = False
        self._rewind = position if self._rewind is None else min(self._rewind, position)
        self._dirty = True
        self._kick()

    def acked(self, eids: list[int]) -> None:
        """The client acknowledged envelopes: free their window slots."""
        self._unacked.difference_update(eids)
        for eid in eids:
            if eid not in self._acked:
                self._acked.add(eid)
                self._acked_order.append(eid)
        while len(self._acked_order) > RECENTLY_ACKED:
            self._acked.discard(self._acked_order.popleft())
        if not self._live:
            self._kick()

    def _kick(self) -> None:
        if not self._started or self._closed or (self._pump is not None and not self._pump.done()):
            return
        self._pump = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while not self._closed:
                room = self._window - len(self._unacked)
                if room <= 0:
                    return  # resumed by acked()
                self._dirty = False
                if self._rewind is not None:
                    self._last_eid = min(self._last_eid, self._rewind)
                    self._rewind = None
                rows = await self._store.fetch_queued(
                    self._device_pk, self._last_eid, min(PAGE, room)
                )
                for row in rows:
                    self._last_eid = max(self._last_eid, row.eid)
                    if row.eid in self._unacked or row.eid in self._acked:
                        continue  # pushed before (the read may predate the ack's commit)
                    data = codec.encode(
                        Envelope(
                            eid=row.eid,
                            sender=row.sender,
                            sender_device=row.sender_device,
                            type=row.type,
                            body=row.body,
                            ts=row.ts,
                            group=row.group,
                        )
                    )
                    self._unacked.add(row.eid)
                    if not await self._send(data):
                        return  # the connection is closed
                if len(rows) < min(PAGE, room) and not self._dirty:
                    self._live = True
                    if not self._drained_sent:
                        self._drained_sent = True
                        await self._send(codec.encode(Drained()))
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery pump failed; the device will get its envelopes on reconnect")
