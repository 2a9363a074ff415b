"""Group constants both sides share: envelope types, the device digest, invite links."""

import base64
import binascii
import hashlib
from collections.abc import Iterable

import msgspec

from plauder.protocol.frames import GroupNotice

GID_BYTES = 16
GROUP_MESSAGE = 2  # a Megolm ciphertext (GroupBody) of a member
GROUP_NOTICE = 3  # a GroupNotice written by the server
GROUP_STATE = 4  # a Megolm ciphertext carrying the group's name and description
GROUP_TYPES = frozenset((GROUP_MESSAGE, GROUP_NOTICE, GROUP_STATE))
LINK_PREFIX = "plauder://join/"


class GroupBody(msgspec.Struct, frozen=True, kw_only=True):
    """What a `group_send` body holds: the sender's Megolm session and its ciphertext."""

    session_id: str
    ciphertext: bytes


_notice_encoder = msgspec.msgpack.Encoder()
_notice_decoder = msgspec.msgpack.Decoder(GroupNotice)
_body_decoder = msgspec.msgpack.Decoder(GroupBody)


def device_digest(devices: Iterable[tuple[str, int]]) -> bytes:
    """SHA-256 over the sorted (number, device id) pairs of a group's devices."""
    h = hashlib.sha256(b"plauder-group-devices-v1\n")
    for number, device_id in sorted(set(devices)):
        h.update(f"{number}\x00{device_id}\n".encode())
    return h.digest()


def encode_notice(notice: GroupNotice) -> bytes:
    """A notice as an envelope body."""
    return _notice_encoder.encode(notice)


def decode_notice(body: bytes) -> GroupNotice:
    """A notice from an envelope body; raises msgspec.DecodeError or ValidationError."""
    notice: GroupNotice = _notice_decoder.decode(body)
    return notice


def encode_body(body: GroupBody) -> bytes:
    """A group message's wire body."""
    return _notice_encoder.encode(body)


def decode_body(data: bytes) -> GroupBody:
    """A group message's wire body; raises msgspec.DecodeError or ValidationError."""
    body: GroupBody = _body_decoder.decode(data)
    return body


def link(token: str, key: bytes = b"") -> str:
    """The invite link users share for a token, with its card's key after a `#`."""
    fragment = "#" + base64.urlsafe_b64encode(key).decode().rstrip("=") if key else ""
    return LINK_PREFIX + token + fragment


def token_of(link_or_token: str) -> str:
    """The token inside an invite link (or the token itself); the only part a server sees."""
    text = link_or_token.strip()
    text = text[len(LINK_PREFIX) :] if text.startswith(LINK_PREFIX) else text
    return text.split("#", 1)[0]


def key_of(link: str) -> bytes:
    """The key of the card in an invite link; b"" if it has none (or a malformed one)."""
    _, _, fragment = link.strip().partition("#")
    try:
        return base64.urlsafe_b64decode(fragment + "=" * (-len(fragment) % 4))
    except (binascii.Error, ValueError):
        return b""
