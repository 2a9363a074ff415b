"""The async SDK: `Client` and the events and errors it produces."""

from plauder.client.chat import Chat
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
from plauder.client.media import Attachment, MediaFileError
from plauder.client.media_transfer import TransferFailed
from plauder.client.store import HistoryEntry
from plauder.protocol.frames import GroupSettings

__all__ = [
    "Attachment",
    "BadServerUrl",
    "Chat",
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
    "MediaFileError",
    "MessageReceived",
    "NotConnected",
    "NotRegistered",
    "PresenceChanged",
    "ReceiptReceived",
    "ServerError",
    "TransferFailed",
    "TypingChanged",
    "UnknownContact",
    "UnknownGroup",
    "UntrustedDevices",
    "receipt_summary",
]
