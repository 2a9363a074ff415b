"""Outgoing WebSocket frames written in batches: one socket write per connection per loop turn.

A `send` makes the server write three frames (`envelope`, `sent`, later `ok`),
and under load many land on one connection in the same turn of the event
loop; writing each with its own `send()` system call cost the server about a
seventh of its time. Server-to-client frames are unmasked and plauder does
not compress, so a binary frame is a 2-10 byte header and the payload
(RFC 6455, section 5.2).
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


class BatchedWriter:
    """Collects a connection's binary frames and writes them once per loop turn."""

    __slots__ = ("_loop", "_parts", "_scheduled", "_transport")

    def __init__(self, transport: Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
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
            self._loop.call_soon(self.flush)
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
