"""The async SDK: `Client` and the events and errors it produces."""

from plauder.client.call_audio import (
    AudioSink,
    AudioSource,
    Discard,
    FileSource,
    MemorySink,
    Microphone,
    Silence,
    Speaker,
    Tone,
    WavFile,
)
from plauder.client.call_errors import (
    CallError,
    CallFailed,
    CallFailure,
    CallStateError,
    CallsUnavailable,
)
from plauder.client.call_log import CallLogEntry, CallStats
from plauder.client.calls import Call, CallState
from plauder.client.chat import Chat
from plauder.client.client import Client
from plauder.client.errors import (
    BadServerUrl,
    ClientError,
    ConnectionLost,
    NotConnected,
    NotRegistered,
    Queued,
    ServerError,
    UnknownContact,
    UnknownGroup,
    UntrustedDevices,
)
from plauder.client.events import (
    CallStateChanged,
    DecryptionError,
    Event,
    GroupChanged,
    IdentityChanged,
    IncomingCall,
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
    "AudioSink",
    "AudioSource",
    "BadServerUrl",
    "Call",
    "CallError",
    "CallFailed",
    "CallFailure",
    "CallLogEntry",
    "CallState",
    "CallStateChanged",
    "CallStateError",
    "CallStats",
    "CallsUnavailable",
    "Chat",
    "Client",
    "ClientError",
    "ConnectionLost",
    "DecryptionError",
    "Discard",
    "Event",
    "FileSource",
    "Group",
    "GroupChanged",
    "GroupSettings",
    "Groups",
    "HistoryEntry",
    "IdentityChanged",
    "IncomingCall",
    "MediaFileError",
    "MemorySink",
    "MessageReceived",
    "Microphone",
    "NotConnected",
    "NotRegistered",
    "PresenceChanged",
    "Queued",
    "ReceiptReceived",
    "ServerError",
    "Silence",
    "Speaker",
    "Tone",
    "TransferFailed",
    "TypingChanged",
    "UnknownContact",
    "UnknownGroup",
    "UntrustedDevices",
    "WavFile",
    "receipt_summary",
]
