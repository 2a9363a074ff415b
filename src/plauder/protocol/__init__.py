"""The wire protocol: frames, codec, error codes and limits, with no I/O."""

from plauder.protocol.errors import CloseCode, ErrorCode
from plauder.protocol.limits import PROTOCOL_VERSION, Limits

__all__ = ["PROTOCOL_VERSION", "CloseCode", "ErrorCode", "Limits"]
