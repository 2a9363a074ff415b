"""Every frame on the WebSocket, as msgspec Structs in two tagged unions.

Frames are msgpack maps with a `t` field naming the type. Requests carry an
`id` chosen by the client; the server answers each with a frame of the same
`id` (a result or an `error`). Pushes from the server (`envelope`, `drained`,
`keys_low`, `presence`) carry no `id`. New fields get defaults; a field never
changes its type.
"""

from typing import Literal

import msgspec

from plauder.protocol.limits import Limits


class _Frame(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", omit_defaults=True):
    """Base of all frames."""


class _Value(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of values nested inside frames."""


# --- values --------------------------------------------------------------------------


class SignedKey(_Value, frozen=True, kw_only=True):
    """A Curve25519 one-time or fallback key signed by its device's Ed25519 key."""

    key_id: str
    key: str  # unpadded base64
    signature: str  # Ed25519 over crypto.identity.prekey_payload(key)
    fallback: bool = False


class DeviceKeys(_Value, frozen=True, kw_only=True):
    """A device's public keys, signed by its account's identity key."""

    device_id: int
    identity_key: str  # Curve25519, unpadded base64
    signing_key: str  # Ed25519, unpadded base64
    signature: str  # account key's Ed25519 over crypto.identity.device_payload(...)


class DeviceBundle(_Value, frozen=True, kw_only=True):
    """A device's keys and, when claimed, one pre-key to start an Olm session."""

    device: DeviceKeys
    prekey: SignedKey | None = None


class OutEnvelope(_Value, frozen=True, kw_only=True):
    """One ciphertext for one recipient device inside a `send`."""

    to: str  # recipient account's number (E.164)
    device_id: int
    type: int  # Olm message type: 0 pre-key, 1 normal
    body: bytes


# --- client to server ----------------------------------------------------------------


class Hello(_Frame, tag="hello", frozen=True, kw_only=True):
    """First frame on every connection: the protocol version the client speaks."""

    v: int
    agent: str = ""


class RequestCode(_Frame, tag="request_code", frozen=True, kw_only=True):
    """Ask for a verification code to be sent to a phone number."""

    id: int
    number: str


class Verify(_Frame, tag="verify", frozen=True, kw_only=True):
    """Prove the code and register the account key and this first device."""

    id: int
    number: str
    code: str
    account_key: str  # Ed25519, unpadded base64
    device: DeviceKeys  # device_id is ignored: the server assigns it
    one_time_keys: list[SignedKey] = []
    fallback_key: SignedKey | None = None


class Auth(_Frame, tag="auth", frozen=True, kw_only=True):
    """Sign the connection's challenge with a device's Ed25519 key."""

    id: int
    number: str
    device_id: int
    signature: str  # over crypto.identity.auth_payload(challenge, number, device_id)
    receive: bool = True  # False: send-only connection, queued envelopes stay queued


class UploadKeys(_Frame, tag="upload_keys", frozen=True, kw_only=True):
    """Add one-time keys and optionally replace the fallback key."""

    id: int
    one_time_keys: list[SignedKey] = []
    fallback_key: SignedKey | None = None


class GetDevices(_Frame, tag="get_devices", frozen=True, kw_only=True):
    """Fetch an account's signed device list; with `claim`, one pre-key per device."""

    id: int
    number: str
    claim: bool = False


class Send(_Frame, tag="send", frozen=True, kw_only=True):
    """One message as one ciphertext per recipient device, stored atomically."""

    id: int
    cmid: bytes  # client message id, 16 bytes: re-sends with the same cmid are stored once
    envelopes: list[OutEnvelope]
    ephemeral: bool = False  # delivered to connected devices only, never stored


class Ack(_Frame, tag="ack", frozen=True, kw_only=True):
    """The device has stored these envelopes; the server deletes them."""

    id: int
    eids: list[int]


class SetPrivacy(_Frame, tag="set_privacy", frozen=True, kw_only=True):
    """Who may see this account's online status and last seen time."""

    id: int
    last_seen: Literal["everyone", "nobody"]


class WatchPresence(_Frame, tag="watch_presence", frozen=True, kw_only=True):
    """Receive `presence` pushes for these numbers (replaces the previous list)."""

    id: int
    numbers: list[str]


class Ping(_Frame, tag="ping", frozen=True, kw_only=True):
    """Keep-alive and round-trip measurement."""

    id: int


ClientFrame = (
    Hello
    | RequestCode
    | Verify
    | Auth
    | UploadKeys
    | GetDevices
    | Send
    | Ack
    | SetPrivacy
    | WatchPresence
    | Ping
)


# --- server to client ----------------------------------------------------------------


class Welcome(_Frame, tag="welcome", frozen=True, kw_only=True):
    """Answer to `hello`: the version, a fresh challenge and the limits in force."""

    v: int
    challenge: bytes
    limits: Limits
    server: str = ""


class Ok(_Frame, tag="ok", frozen=True, kw_only=True):
    """A request succeeded and has no other result."""

    id: int


class Error(_Frame, tag="error", frozen=True, kw_only=True):
    """A request (or, with id 0, a frame without one) failed."""

    code: str  # a plauder.protocol.errors.ErrorCode value
    message: str
    id: int = 0


class Registered(_Frame, tag="registered", frozen=True, kw_only=True):
    """The account and device exist; the device can now `auth`."""

    id: int
    device_id: int


class AuthOk(_Frame, tag="auth_ok", frozen=True, kw_only=True):
    """The connection is authenticated as the device."""

    id: int
    one_time_keys: int  # unclaimed one-time keys the server holds for the device
    server_time: int  # milliseconds since the Unix epoch


class Devices(_Frame, tag="devices", frozen=True, kw_only=True):
    """An account's account key and signed devices (with pre-keys when claimed)."""

    id: int
    number: str
    account_key: str
    devices: list[DeviceBundle]


class Sent(_Frame, tag="sent", frozen=True, kw_only=True):
    """The message is durably stored (the single tick), or was already."""

    id: int
    ts: int  # server time of storage, milliseconds since the Unix epoch
    duplicate: bool = False


class Envelope(_Frame, tag="envelope", frozen=True, kw_only=True):
    """A ciphertext for this device; stored ones (eid > 0) must be acked."""

    eid: int  # 0 for ephemeral envelopes, which are never acked
    sender: str
    sender_device: int
    type: int
    body: bytes
    ts: int


class Drained(_Frame, tag="drained", frozen=True, kw_only=True):
    """Everything queued when this connection authenticated has been pushed."""


class KeysLow(_Frame, tag="keys_low", frozen=True, kw_only=True):
    """The device's unclaimed one-time keys fell below the threshold."""

    remaining: int


class Presence(_Frame, tag="presence", frozen=True, kw_only=True):
    """A watched account's online status and last seen time (None: hidden)."""

    number: str
    online: bool
    last_seen: int | None = None


class Pong(_Frame, tag="pong", frozen=True, kw_only=True):
    """Answer to `ping`."""

    id: int
    server_time: int


ServerFrame = (
    Welcome
    | Ok
    | Error
    | Registered
    | AuthOk
    | Devices
    | Sent
    | Envelope
    | Drained
    | KeysLow
    | Presence
    | Pong
)
