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


class GroupSettings(_Value, frozen=True, kw_only=True):
    """Who may send to a group and edit its info, and whether link joins need approval."""

    send: Literal["all", "admins"] = "all"
    edit: Literal["all", "admins"] = "admins"
    approval: bool = False  # joining by invite link waits for an admin


class GroupMember(_Value, frozen=True, kw_only=True):
    """A member of a group and its role."""

    number: str
    role: Literal["admin", "member"]


class GroupSummary(_Value, frozen=True, kw_only=True):
    """One group the account belongs to, as listed by `list_groups`."""

    gid: bytes
    version: int
    role: Literal["admin", "member"]
    members: int


class DeviceRef(_Value, frozen=True, kw_only=True):
    """One device of one account."""

    number: str
    device_id: int


class MemberDevices(_Value, frozen=True, kw_only=True):
    """A group member's account key and signed devices (with pre-keys when claimed)."""

    number: str
    account_key: str
    devices: list[DeviceBundle]


class GroupNotice(_Value, frozen=True, kw_only=True):
    """A change of a group's membership or settings, written by the server (envelope type 3).

    Every member device receives it in order with the group's messages (a
    join request, `requested`, goes to admins only and keeps the version); a
    removed member's devices receive the notice of their removal, and nothing after.
    """

    action: Literal[
        "created",
        "added",
        "removed",
        "left",
        "joined",
        "promoted",
        "demoted",
        "settings",
        "requested",
    ]
    actor: str  # the number that made the change
    numbers: list[str] = []  # whom it concerns
    version: int  # the group's version after the change
    settings: GroupSettings | None = None  # with `created` and `settings`


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


class GroupCreate(_Frame, tag="group_create", frozen=True, kw_only=True):
    """Create a group with the sender as its first admin; answered with `group_info`.

    `gid` (16 random bytes) is chosen by the client, so a repeated create after
    a lost answer finds the group it made.
    """

    id: int
    gid: bytes
    members: list[str] = []
    settings: GroupSettings = GroupSettings()


class GetGroup(_Frame, tag="get_group", frozen=True, kw_only=True):
    """Members, roles and settings of a group the sender belongs to."""

    id: int
    gid: bytes


class ListGroups(_Frame, tag="list_groups", frozen=True, kw_only=True):
    """The groups the sender's account belongs to."""

    id: int


class GroupAdd(_Frame, tag="group_add", frozen=True, kw_only=True):
    """Admins: add accounts to a group (members already in it are left alone)."""

    id: int
    gid: bytes
    numbers: list[str]


class GroupRemove(_Frame, tag="group_remove", frozen=True, kw_only=True):
    """Admins: remove members from a group."""

    id: int
    gid: bytes
    numbers: list[str]


class GroupSetRole(_Frame, tag="group_set_role", frozen=True, kw_only=True):
    """Admins: promote members to admin or demote admins to member."""

    id: int
    gid: bytes
    numbers: list[str]
    role: Literal["admin", "member"]


class GroupLeave(_Frame, tag="group_leave", frozen=True, kw_only=True):
    """Leave a group; the last admin's leaving makes the longest member an admin."""

    id: int
    gid: bytes


class GroupSetSettings(_Frame, tag="group_set_settings", frozen=True, kw_only=True):
    """Admins: change who may send and edit, and whether link joins need approval."""

    id: int
    gid: bytes
    settings: GroupSettings


class GroupInvite(_Frame, tag="group_invite", frozen=True, kw_only=True):
    """Admins: create a new invite link token (the old one stops working), or revoke it.

    `card` is the group's name and description sealed under a key only the
    link carries (crypto/invite.py): the server keeps it for joiners, unread.
    """

    id: int
    gid: bytes
    revoke: bool = False
    card: bytes = b""


class GroupJoin(_Frame, tag="group_join", frozen=True, kw_only=True):
    """Join the group of an invite link token (or ask to, if it needs approval)."""

    id: int
    token: str


class GroupAnswer(_Frame, tag="group_answer", frozen=True, kw_only=True):
    """Admins: approve or deny the join requests of these numbers."""

    id: int
    gid: bytes
    numbers: list[str]
    approve: bool


class GroupDevices(_Frame, tag="group_devices", frozen=True, kw_only=True):
    """Every member's signed devices and their digest; claims pre-keys of the listed devices."""

    id: int
    gid: bytes
    claim: list[DeviceRef] = []


class GroupSend(_Frame, tag="group_send", frozen=True, kw_only=True):
    """One Megolm ciphertext for every member device, stored once, queued for each.

    `digest` is protocol.groups.device_digest of the member devices the sender
    shared its session key with (all but itself); if the group's devices differ,
    nothing is stored and the answer is `group_devices_changed`. `kind` "state"
    (new name or description) needs the right to edit the group's info.
    """

    id: int
    gid: bytes
    cmid: bytes
    body: bytes
    digest: bytes
    kind: Literal["message", "state"] = "message"


class MediaUpload(_Frame, tag="media_upload", frozen=True, kw_only=True):
    """Reserve a new blob of `size` ciphertext bytes; or, with `media`, resume that upload.

    The answer is a `media_token` for `PUT /media/<media>`, or an error
    (`media_too_large`, `quota_exceeded`, `rate_limited`) before any byte moves.
    """

    id: int
    size: int
    media: str = ""  # an upload of this device's to resume (hex id)


class MediaDownload(_Frame, tag="media_download", frozen=True, kw_only=True):
    """A token to read a complete blob with `GET /media/<media>` (`unknown_media` if none)."""

    id: int
    media: str


MediaRequest = MediaUpload | MediaDownload


class GetTurn(_Frame, tag="get_turn", frozen=True, kw_only=True):
    """Ask for short-lived TURN credentials for a call (answered with `turn`)."""

    id: int


GroupRequest = (
    GroupCreate
    | GetGroup
    | ListGroups
    | GroupAdd
    | GroupRemove
    | GroupSetRole
    | GroupLeave
    | GroupSetSettings
    | GroupInvite
    | GroupJoin
    | GroupAnswer
    | GroupDevices
    | GroupSend
)

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
    | GroupRequest
    | MediaRequest
    | GetTurn
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
    """A ciphertext for this device; stored ones (eid > 0) must be acked.

    Types (protocol.groups): 0 and 1 are Olm messages; with `group` set, 2 is a
    group message, 3 a GroupNotice from the server, 4 a group state message.
    """

    eid: int  # 0 for ephemeral envelopes, which are never acked
    sender: str
    sender_device: int
    type: int
    body: bytes
    ts: int
    group: bytes = b""  # the group's gid for types 2 to 4


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


class GroupInfo(_Frame, tag="group_info", frozen=True, kw_only=True):
    """A group's members, roles and settings; join requests and link state for admins."""

    id: int
    gid: bytes
    version: int
    members: list[GroupMember]
    settings: GroupSettings
    requests: list[str] = []  # numbers waiting for approval (admins only)
    link: bool = False  # whether an invite link is active (admins only)
    card: bytes = b""  # in the answer to `group_join`: the link's sealed invite card


class GroupList(_Frame, tag="group_list", frozen=True, kw_only=True):
    """The groups of the account."""

    id: int
    groups: list[GroupSummary]


class GroupLink(_Frame, tag="group_link", frozen=True, kw_only=True):
    """The new invite link token of a group ("" once revoked)."""

    id: int
    gid: bytes
    token: str = ""


class JoinRequested(_Frame, tag="join_requested", frozen=True, kw_only=True):
    """The group needs an admin's approval: the request is waiting (`card` as in group_info)."""

    id: int
    gid: bytes
    card: bytes = b""


class GroupDeviceList(_Frame, tag="group_device_list", frozen=True, kw_only=True):
    """Every member's devices and the digest a `group_send` must carry (sender excluded)."""

    id: int
    gid: bytes
    version: int
    digest: bytes
    members: list[MemberDevices]


class MediaToken(_Frame, tag="media_token", frozen=True, kw_only=True):
    """A short-lived bearer token for one blob's HTTP upload or download.

    `offset` is how many bytes the server holds already (an upload resumes
    there); `expires` is the token's end in server milliseconds.
    """

    id: int
    media: str  # hex id, the last part of the URL path /media/<media>
    token: str
    size: int
    offset: int = 0
    expires: int


class Turn(_Frame, tag="turn", frozen=True, kw_only=True):
    """TURN relays and credentials in coturn's shared-secret scheme; no urls: none configured.

    `username` is "<expiry unix seconds>:<account id>", `password` the base64
    HMAC-SHA1 of it under the secret the server shares with the relay.
    """

    id: int
    urls: list[str]  # turn:host:port?transport=udp, ...
    username: str = ""
    password: str = ""
    expires: int = 0  # server milliseconds


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
    | GroupInfo
    | GroupList
    | GroupLink
    | JoinRequested
    | GroupDeviceList
    | MediaToken
    | Turn
)
