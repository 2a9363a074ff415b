"""Stable error codes carried by error frames, and WebSocket close codes."""

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Machine-readable reason in an `Error` frame; values never change meaning."""

    BAD_FRAME = "bad_frame"  # not msgpack, or the wrong shape for its type
    UNKNOWN_FRAME = "unknown_frame"  # a frame type this server does not know
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    HELLO_REQUIRED = "hello_required"  # the first frame must be `hello`
    UNAUTHENTICATED = "unauthenticated"  # the request needs `auth` first
    ALREADY_AUTHENTICATED = "already_authenticated"
    INVALID_NUMBER = "invalid_number"
    RATE_LIMITED = "rate_limited"
    INVALID_CODE = "invalid_code"
    CODE_EXPIRED = "code_expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    BAD_SIGNATURE = "bad_signature"
    AUTH_FAILED = "auth_failed"
    UNKNOWN_ACCOUNT = "unknown_account"
    MISMATCHED_DEVICES = "mismatched_devices"
    TOO_MANY_ENVELOPES = "too_many_envelopes"
    ENVELOPE_TOO_LARGE = "envelope_too_large"
    UNKNOWN_ENVELOPE = "unknown_envelope"
    INVALID_REQUEST = "invalid_request"
    TOO_MANY_KEYS = "too_many_keys"
    UNKNOWN_GROUP = "unknown_group"  # no such group, or the sender is not in it
    NOT_A_MEMBER = "not_a_member"  # the numbers named are not members of the group
    NOT_ALLOWED = "not_allowed"  # the group's settings or the sender's role forbid it
    GROUP_FULL = "group_full"
    TOO_MANY_GROUPS = "too_many_groups"
    GROUP_EXISTS = "group_exists"  # the gid is taken by a group someone else created
    GROUP_DEVICES_CHANGED = "group_devices_changed"  # fetch group_devices, share keys again
    INVALID_LINK = "invalid_link"  # unknown or revoked invite link
    MEDIA_TOO_LARGE = "media_too_large"  # above the server's max_media_bytes
    QUOTA_EXCEEDED = "quota_exceeded"  # the account's stored media would pass its quota
    UNKNOWN_MEDIA = "unknown_media"  # no such blob, expired, or not complete yet
    INVALID_TOKEN = "invalid_token"  # a media token that is forged, expired or for another blob
    UNAVAILABLE = "unavailable"  # storage is down: nothing was stored, retry later
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (4000-4999 are application codes)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down: reconnect elsewhere or later
    PROTOCOL_ERROR = 4000  # too many bad frames
    UNSUPPORTED_VERSION = 4001
    AUTH_TIMEOUT = 4002  # no successful `auth` in time
    REPLACED = 4003  # the same device connected again; this connection is superseded
    RATE_LIMITED = 4004
    SLOW_CONSUMER = 4005  # the client did not read its frames
