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
    UnknownGroup,
    UntrustedDevices,
)
from plauder.client.events import (
    DecryptionError,
    Event,
    GroupChanged,
    IdentityChanged,
    MessageReceived,
    PresenceChanged,
    ReceiptReceived,
    TypingChanged,
)
from plauder.client.groups import Group, Groups, receipt_summary
from plauder.client.store import HistoryEntry
from plauder.protocol.frames import GroupSettings

__all__ = [
    "BadServerUrl",
    "Client",
    "ClientError",
    "ConnectionLost",
    "DecryptionError",
    "Event",
    "Group",
    "GroupChanged",
    "GroupSettings",
    "Groups",
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
    "UnknownGroup",
    "UntrustedDevices",
    "receipt_summary",
]
