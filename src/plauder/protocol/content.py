"""What travels inside the end-to-end encryption: small UTF-8 JSON documents.

The server never sees these. They are JSON (not msgpack) so that a browser
client on libolm, which takes text plaintext only, can read and write them.
"""

from typing import Literal

import msgspec


class _Content(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """Base of every plaintext document."""


class Text(_Content, tag="text", frozen=True, kw_only=True):
    """A text message; `id` is the sender's client message id in hex."""

    id: str
    ts: int  # sender's clock, milliseconds since the Unix epoch
    body: str


class Receipt(_Content, tag="receipt", frozen=True, kw_only=True):
    """The recipient's device stored (`delivered`) or its user saw (`read`) messages."""

    status: Literal["delivered", "read"]
    ids: list[str]


class Typing(_Content, tag="typing", frozen=True, kw_only=True):
    """The sender started or stopped typing (sent ephemeral, never stored)."""

    active: bool


Content = Text | Receipt | Typing

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Content)


def encode_content(content: Content) -> bytes:
    """UTF-8 JSON bytes of a plaintext document."""
    return _encoder.encode(content)


class Unknown(msgspec.Struct, frozen=True):
    """The two fields read from a document of a type this version does not know."""

    type: str
    id: str | None = None
    ts: int = 0


_unknown_decoder = msgspec.json.Decoder(Unknown)


def decode_unknown(data: bytes) -> Unknown | None:
    """Type and id of a well-formed document of an unknown type; None if it is not one."""
    try:
        return _unknown_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_content(data: bytes) -> Content:
    """Parse a plaintext document; raises msgspec.ValidationError or DecodeError."""
    content: Content = _decoder.decode(data)
    return content
