"""`Chat`: one conversation between two people, as the SDK offers it (`client.chat(number)`)."""

import secrets
from dataclasses import dataclass

from plauder.client.media import MediaService
from plauder.client.outbox import Outbox
from plauder.client.sending import SEND_TIMEOUT, FileSending
from plauder.client.store import HistoryEntry, LocalStore
from plauder.clock import Clock
from plauder.protocol.content import Text, encode_content


@dataclass(frozen=True, slots=True)
class ChatParts:
    """What every `Chat` works with, built once by the Client."""

    store: LocalStore
    outbox: Outbox
    media: MediaService
    clock: Clock


class Chat(FileSending):
    """The conversation with one contact: send texts and files, read its history."""

    def __init__(self, parts: ChatParts, peer: str) -> None:
        self._parts = parts
        self.peer = peer

    def __repr__(self) -> str:
        return f"Chat({self.peer})"

    async def send_text(self, text: str, *, timeout: float = SEND_TIMEOUT) -> str:
        """Encrypt and send a text; returns its message id once the server stored it."""
        cmid = secrets.token_bytes(16)
        mid = cmid.hex()
        now = self._parts.clock.now_ms()
        content = encode_content(Text(id=mid, ts=now, body=text))
        outbox = self._parts.outbox
        entry = await outbox.queue(self.peer, cmid, content, message=(mid, text, now))
        await outbox.await_sent(entry, timeout)
        return mid

    @property
    def _media_parts(self) -> tuple[MediaService, Outbox, Clock]:
        return self._parts.media, self._parts.outbox, self._parts.clock

    @property
    def _conversation(self) -> tuple[str, bool]:
        return self.peer, False

    def history(self, limit: int = 50) -> list[HistoryEntry]:
        """The last messages of the chat, oldest first."""
        return self._parts.store.history(self.peer, limit)
