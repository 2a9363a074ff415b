"""Errors of voice calls, and the stable codes of why a call failed.

CallError (a ClientError)
├── CallsUnavailable   aiortc (the `plauder[calls]` extra) is not installed
├── CallStateError     not possible now: accepting an outgoing call, calling while in a call...
└── CallFailed         the call failed; `reason` is a CallFailure code
"""

from enum import StrEnum

from plauder.client.errors import ClientError


class CallFailure(StrEnum):
    """Why a call failed (the `reason` of a failed call and of CallFailed)."""

    FINGERPRINT_MISMATCH = "fingerprint_mismatch"  # the DTLS certificate is not the one signalled
    NO_RELAY = "no_relay"  # relay-only, but no TURN relay address could be had
    SETUP_TIMEOUT = "setup_timeout"  # the media did not connect in time
    MEDIA_FAILED = "media_failed"  # ICE or DTLS failed
    CONNECTION_LOST = "connection_lost"  # the media dropped during the call
    BAD_SDP = "bad_sdp"  # the other side's offer or answer cannot be used (no Opus...)
    REMOTE_FAILED = "remote_failed"  # the other side says the call failed there
    NOT_SENT = "not_sent"  # the signalling could not be sent
    UNAVAILABLE = "calls_unavailable"  # this device cannot do calls (aiortc missing)


class CallError(ClientError):
    """Base of the call errors."""


class CallsUnavailable(CallError):
    """Calls need aiortc: pip install 'plauder[calls]'."""


class CallStateError(CallError):
    """The call (or this device) is not in a state that allows this."""


class CallFailed(CallError):
    """The call failed; `reason` says why in a stable code, the message in words."""

    def __init__(self, reason: CallFailure, message: str) -> None:
        super().__init__(f"{message} ({reason})")
        self.reason = reason
        self.message = message
