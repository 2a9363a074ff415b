"""Outgoing WebSocket frames written in batches: one socket write per connection per loop turn.

A `send` makes the server write three frames (`envelope`, `sent`, later `ok`),
and under load many land on one connection in the same turn of the event
loop; writing each with its own `send()` system call cost the server about a
seventh of its time. One `Flusher` per server writes every connection that
has frames waiting in a single callback: a group message reaching 1,000
connections schedules one callback, not 1,000. Server-to-client frames are
unmasked and plauder does not compress, so a binary frame is a 2-10 byte
header and the payload (RFC 6455, section 5.2).
"""

import asyncio
import struct
from typing import Protocol

OPCODE_BINARY = 0x2
FIN = 0x80


class Transport(Protocol):
    """The part of an asyncio transport the writer uses."""

    def write(self, data: bytes) -> None:
        """Queue bytes on the socket."""
        ...

    def is_closing(self) -> bool:
        """Whether the transport is closing or closed."""
        ...


def binary_frame_header(length: int) -> bytes:
    """The header of an unmasked, final binary frame carrying `length` bytes."""
    if length < 126:
        return bytes((FIN | OPCODE_BINARY, length))
    if length < 1 << 16:
        return struct.pack("!BBH", FIN | OPCODE_BINARY, 126, length)
    return struct.pack("!BBQ", FIN | OPCODE_BINARY, 127, length)


class Flusher:
    """Writes, once per loop turn, every connection that queued frames in it."""

    __slots__ = ("_loop", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[BatchedWriter] = []

    def schedule(self, writer: "BatchedWriter") -> None:
        """Flush this writer at the end of the current loop turn."""
        if not self._waiting:
            self._loop.call_soon(self._flush_all)
        self._waiting.append(writer)

    def _flush_all(self) -> None:
        waiting, self._waiting = self._waiting, []
        for writer in waiting:
            writer.flush()


class BatchedWriter:
    """Collects a connection's binary frames and writes them once per loop turn."""

    __slots__ = ("_flusher", "_parts", "_scheduled", "_transport")

    def __init__(self, transport: Transport, flusher: Flusher) -> None:
        self._transport = transport
        self._flusher = flusher
        self._parts: list[bytes] = []
        self._scheduled = False

    def send(self, payload: bytes) -> bool:
        """Queue one binary frame; False if the connection is closing."""
        if self._transport.is_closing():
            return False
        self._parts.append(binary_frame_header(len(payload)))
        self._parts.append(payload)
        if not self._scheduled:
            self._scheduled = True
            self._flusher.schedule(self)
        return True

    def flush(self) -> None:
        """Write everything queued in one call."""
        self._scheduled = False
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        if not self._transport.is_closing():
            self._transport.write(data)
