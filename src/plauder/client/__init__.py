"""The async SDK: `Client` and the events and errors it produces."""

from plauder.client.client import Client
from plauder.client.errors import (
    BadServerUrl,
    ClientError,
    ConnectionLost,
    NotConnected,
    NotRegistered,
    ServerError,
    UnknownContact,
    UntrustedDevices,
)
from plauder.client.events import (
    DecryptionError,
    Event,
    IdentityChanged,
    MessageReceived,
    PresenceChanged,
    ReceiptReceived,
    TypingChanged,
)
from plauder.client.store import HistoryEntry

__all__ = [
    "BadServerUrl",
    "Client",
    "ClientError",
    "ConnectionLost",
    "DecryptionError",
    "Event",
    "HistoryEntry",
    "IdentityChanged",
    "MessageReceived",
    "NotConnected",
    "NotRegistered",
    "PresenceChanged",
    "ReceiptReceived",
    "ServerError",
    "TypingChanged",
    "UnknownContact",
    "UntrustedDevices",
]
