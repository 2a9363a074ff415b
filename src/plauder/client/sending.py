"""`FileSending`: what chats and groups share for sending files, photos and voice notes."""

import functools
import secrets
from abc import ABC, abstractmethod
from pathlib import Path

from plauder.client.media import MediaService
from plauder.client.media_files import MediaKind
from plauder.client.media_transfer import Progress
from plauder.client.outbox import Outbox
from plauder.clock import Clock

SEND_TIMEOUT = 60.0


class FileSending(ABC):
    """`send_file` and `send_voice` for a conversation that knows how to post a message."""

    @property
    @abstractmethod
    def _media_parts(self) -> tuple[MediaService, Outbox, Clock]:
        """The media service, outbox and clock of the client."""

    @property
    @abstractmethod
    def _conversation(self) -> tuple[str, bool]:
        """The contact's number or the group's id, and whether it is a group."""

    async def send_file(
        self,
        path: Path | str,
        *,
        caption: str = "",
        keep_metadata: bool = False,
        progress: Progress | None = None,
        timeout: float = SEND_TIMEOUT,
    ) -> str:
        """Encrypt, upload and send a file, photo or video; returns its message id.

        Photos lose their metadata (EXIF, GPS position) unless `keep_metadata`.
        `progress(done, total)` follows the upload's bytes. NotConnected when
        the upload or the message cannot finish now: once encrypted, the file
        stays queued (a pending message) and goes out after the next connection,
        also after a restart of the client.
        """
        return await self._send_media(
            Path(path), caption, None, keep_metadata, False, progress, timeout
        )

    async def send_voice(
        self,
        path: Path | str,
        *,
        low_data: bool = False,
        progress: Progress | None = None,
        timeout: float = SEND_TIMEOUT,
    ) -> str:
        """Turn any audio file into an Opus voice note and send it; returns its message id.

        `low_data` encodes at a lower bitrate, for mobile data.
        """
        return await self._send_media(Path(path), "", "voice", False, low_data, progress, timeout)

    async def _send_media(
        self,
        path: Path,
        caption: str,
        kind: MediaKind | None,
        keep_metadata: bool,
        low_data: bool,
        progress: Progress | None,
        timeout: float,
    ) -> str:
        media, outbox, clock = self._media_parts
        mid = secrets.token_bytes(16).hex()
        chat, is_group = self._conversation
        content = await media.upload(
            path,
            mid=mid,
            ts=clock.now_ms(),
            caption=caption,
            chat=(chat, is_group),
            kind=kind,
            keep_metadata=keep_metadata,
            low_data=low_data,
            progress=progress,
            timeout=timeout,
        )
        entry = await outbox.queue_media(
            chat, is_group, content, functools.partial(media.posted, mid, content)
        )
        await media.forget_blob(mid)
        await outbox.await_sent(entry, timeout)
        return mid
