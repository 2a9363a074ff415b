"""Encode frames to msgpack and decode them against their union, with typed failures."""

from collections.abc import Callable
from typing import Any

import msgspec

from plauder.errors import PlauderError
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import ClientFrame, Envelope, ServerFrame


class ProtocolError(PlauderError):
    """A frame could not be decoded; `code` says why, `request_id` is 0 if unknown."""

    def __init__(self, code: ErrorCode, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class _Probe(msgspec.Struct):
    """The two fields read from a frame that failed to decode, to explain why."""

    t: Any = None
    id: Any = 0


_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientFrame)
_server_decoder = msgspec.msgpack.Decoder(ServerFrame)
_probe_decoder = msgspec.msgpack.Decoder(_Probe)
_CLIENT_TAGS = frozenset(cls.__struct_config__.tag for cls in ClientFrame.__args__)
_SERVER_TAGS = frozenset(cls.__struct_config__.tag for cls in ServerFrame.__args__)


def encode(frame: ClientFrame | ServerFrame) -> bytes:
    """Serialize a frame to msgpack bytes."""
    return _encoder.encode(frame)


def envelope_encoder(template: Envelope) -> Callable[[int], bytes]:
    """Encodings of one envelope for any eid, from a single encoding of the rest (fan-out)."""
    data = _encoder.encode(msgspec.structs.replace(template, eid=0))
    at = data.index(b"\xa3eid") + 4  # "eid" is the first field after the tag; 0 is one byte
    prefix, suffix = data[:at], data[at + 1 :]
    encode_int = _encoder.encode
    return lambda eid: prefix + encode_int(eid) + suffix


def decode_client(data: bytes, max_bytes: int) -> ClientFrame:
    """Decode a frame sent by a client, or raise ProtocolError."""
    return _decode(data, max_bytes, _client_decoder, _CLIENT_TAGS)  # type: ignore[no-any-return]


def decode_server(data: bytes, max_bytes: int = 1 << 30) -> ServerFrame:
    """Decode a frame sent by a server, or raise ProtocolError."""
    return _decode(data, max_bytes, _server_decoder, _SERVER_TAGS)  # type: ignore[no-any-return]


def _decode(
    data: bytes, max_bytes: int, decoder: msgspec.msgpack.Decoder[Any], tags: frozenset[str]
) -> Any:
    if len(data) > max_bytes:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame exceeds {max_bytes} bytes")
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise _explain(data, tags, exc) from exc


def _explain(data: bytes, tags: frozenset[str], exc: Exception) -> ProtocolError:
    try:
        probe = _probe_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return ProtocolError(ErrorCode.BAD_FRAME, "frame is not a msgpack map of sane depth")
    request_id = probe.id if type(probe.id) is int and 0 <= probe.id < 2**63 else 0
    if not isinstance(probe.t, str):
        return ProtocolError(ErrorCode.BAD_FRAME, "frame has no type field 't'", request_id)
    if probe.t not in tags:
        return ProtocolError(
            ErrorCode.UNKNOWN_FRAME, f"unknown frame type {probe.t[:40]!r}", request_id
        )
    return ProtocolError(ErrorCode.BAD_FRAME, f"malformed {probe.t!r} frame: {exc}", request_id)
