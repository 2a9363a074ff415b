"""Events the SDK emits to applications."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A new text message from a contact."""

    id: str
    sender: str
    body: str
    ts: int  # sender's clock
    server_ts: int


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    """A contact's device stored or its user read messages we sent."""

    sender: str
    status: str  # "delivered" | "read"
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TypingChanged:
    """A contact started or stopped typing."""

    sender: str
    active: bool


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A watched contact came online, went offline, or hides presence (last_seen None)."""

    number: str
    online: bool
    last_seen: int | None


@dataclass(frozen=True, slots=True)
class IdentityChanged:
    """A contact's account key changed: compare safety numbers again."""

    number: str
    old_key: str
    new_key: str


@dataclass(frozen=True, slots=True)
class DecryptionError:
    """An envelope could not be decrypted or came from an untrusted device."""

    sender: str
    sender_device: int
    reason: str


Event = (
    MessageReceived
    | ReceiptReceived
    | TypingChanged
    | PresenceChanged
    | IdentityChanged
    | DecryptionError
)
