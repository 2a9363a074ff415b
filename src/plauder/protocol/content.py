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
    """The recipient's device stored (`delivered`) or its user saw (`read`) messages.

    Receipts for group messages go to their sender alone, over Olm, naming the group.
    """

    status: Literal["delivered", "read"]
    ids: list[str]
    group: str = ""  # the group's gid in hex, for receipts of group messages


class Typing(_Content, tag="typing", frozen=True, kw_only=True):
    """The sender started or stopped typing (sent ephemeral, never stored)."""

    active: bool


class GroupKey(_Content, tag="group_key", frozen=True, kw_only=True):
    """A sender device's Megolm session key for a group, sent over Olm to one member device.

    The fields from `session_id` to `signature` are crypto.GroupKeyShare's. The
    share also carries the group's name and description as the sender knows
    them, so that a new member learns them with its first key.
    """

    group: str  # gid in hex
    session_id: str
    session_key: str
    message_index: int
    sender_identity_key: str
    sender_signing_key: str
    signature: str
    name: str = ""
    description: str = ""
    state_ts: int = 0  # sender's clock of the state message that set name and description


class GroupState(_Content, tag="group_state", frozen=True, kw_only=True):
    """A group's new name and description (a Megolm message of envelope type 4)."""

    id: str
    ts: int
    name: str
    description: str = ""


class Media(_Content, tag="media", frozen=True, kw_only=True):
    """A file, photo, video or voice note: where its encrypted blob is and how to open it.

    The blob at `media` is crypto.media's secretstream ciphertext under `key`;
    the receiver checks its length and `sha256`, and after decrypting, the
    plaintext's `size` and `plain_sha256`, before it keeps a byte.
    """

    id: str
    ts: int
    kind: Literal["file", "image", "video", "audio", "voice"]
    media: str  # the blob's hex id on the sender's server
    key: str  # base64 secretstream key, fresh for this file
    sha256: str  # hex SHA-256 of the ciphertext blob
    enc_size: int  # bytes of the ciphertext blob
    plain_sha256: str  # hex SHA-256 of the file as sent
    size: int  # bytes of the file as sent
    mime: str
    name: str = ""
    caption: str = ""
    width: int = 0  # images and videos
    height: int = 0
    duration_ms: int = 0  # videos, audio and voice notes
    thumbnail: str = ""  # base64 JPEG, a few KiB, for images and videos
    waveform: list[int] = []  # voice notes: 64 loudness points, 0-255


class CallOffer(_Content, tag="call_offer", frozen=True, kw_only=True):
    """A device calls: its WebRTC offer, to every device of the callee.

    The SDP's DTLS fingerprint is authenticated by the end-to-end encryption:
    the callee's media connection must present exactly that certificate.
    """

    call: str  # a fresh 128-bit id in hex
    ts: int  # caller's clock; an offer older than the ring time is a missed call
    sdp: str
    device: int  # the calling device
    low_data: bool = False


class CallRinging(_Content, tag="call_ringing", frozen=True, kw_only=True):
    """A callee's device got the offer and rings."""

    call: str
    device: int


class CallAnswer(_Content, tag="call_answer", frozen=True, kw_only=True):
    """A callee's device accepted: its WebRTC answer, to the caller."""

    call: str
    sdp: str
    device: int


class CallSelect(_Content, tag="call_select", frozen=True, kw_only=True):
    """The caller took the answer of `device`; the callee's other devices stop ringing."""

    call: str
    device: int


class CallReject(_Content, tag="call_reject", frozen=True, kw_only=True):
    """A callee's device declined (`rejected`) or is in another call (`busy`)."""

    call: str
    reason: Literal["rejected", "busy"]
    device: int


class CallHangup(_Content, tag="call_hangup", frozen=True, kw_only=True):
    """Either side ended the call, or the caller gave up ringing (`timeout`) or failed."""

    call: str
    reason: Literal["hangup", "timeout", "cancelled", "failed"] = "hangup"
    device: int = 0


CallSignal = CallOffer | CallRinging | CallAnswer | CallSelect | CallReject | CallHangup

Content = Text | Receipt | Typing | GroupKey | GroupState | Media | CallSignal

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
