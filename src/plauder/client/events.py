"""Events the SDK emits to applications."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plauder.client.media import Attachment, MediaFileError
from plauder.client.media_transfer import Progress

if TYPE_CHECKING:
    from plauder.client.calls import Call


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A new message from a contact, or from a member of a group: a text or a file.

    For a file, photo, video or voice note, `media` describes it and `body` is
    its caption; `download()` fetches it.
    """

    id: str
    sender: str
    body: str
    ts: int  # sender's clock
    server_ts: int
    group: str = ""  # the group's gid in hex; "" for a message between two people
    group_name: str = ""
    media: Attachment | None = None

    async def download(
        self, to: Path | str | None = None, progress: Progress | None = None
    ) -> Path:
        """Fetch, decrypt and verify the message's file; save it in (or as) `to`; return its path.

        Raises MediaFileError for a message without a file, plauder.crypto.media's
        MediaError for a blob that fails the checks, and ServerError
        unknown_media for one that expired.
        """
        if self.media is None:
            raise MediaFileError(f"message {self.id} carries no file")
        return await self.media.download(to, progress)


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    """A contact's device stored or its user read messages we sent (to a group, if given)."""

    sender: str
    status: str  # "delivered" | "read"
    ids: tuple[str, ...]
    group: str = ""  # the group's gid in hex; "" for a message between two people


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


@dataclass(frozen=True, slots=True)
class GroupChanged:
    """Something happened in a group: a member came or went, a role or the name changed.

    `action` is a notice's (created, added, removed, left, joined, promoted,
    demoted, settings, requested) or one of named, renamed, described and
    safety_number (a member's account key changed). `version` is the group's
    version after the change (0 for changes the server does not count).
    `actor` is "" for a name or description this device learned when it
    (re)entered the group: a member passed it on, and who made it is not known.
    """

    gid: str
    name: str
    action: str
    actor: str
    numbers: tuple[str, ...]
    version: int
    text: str  # the line shown in the chat


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A contact calls and this device rings: `call.accept()`, `call.reject()`."""

    call: "Call"

    @property
    def peer(self) -> str:
        """Who calls."""
        return self.call.peer


@dataclass(frozen=True, slots=True)
class CallStateChanged:
    """A call moved on: `state` is a CallState value, `reason` says how a call ended."""

    call: "Call"
    state: str
    reason: str = ""


Event = (
    MessageReceived
    | ReceiptReceived
    | TypingChanged
    | PresenceChanged
    | IdentityChanged
    | DecryptionError
    | GroupChanged
    | IncomingCall
    | CallStateChanged
)
