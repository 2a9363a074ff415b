"""`FileSending`: what chats and groups share for sending files, photos and voice notes."""

import secrets
from abc import ABC, abstractmethod
from pathlib import Path

from plauder.client.media import MediaService
from plauder.client.media_files import MediaKind
from plauder.client.media_transfer import Progress
from plauder.clock import Clock
from plauder.protocol.content import Media

SEND_TIMEOUT = 60.0


class FileSending(ABC):
    """`send_file` and `send_voice` for a conversation that knows how to post a message."""

    @property
    @abstractmethod
    def _media_parts(self) -> tuple[MediaService, Clock]:
        """The media service and clock of the client."""

    @abstractmethod
    async def _post(
        self, cmid: bytes, content: Media, message: tuple[str, str, int], timeout: float
    ) -> None:
        """Queue the file's message (id, caption, ts) and wait until the server stored it."""

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
        `progress(done, total)` follows the upload's bytes.
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
        media, clock = self._media_parts
        cmid = secrets.token_bytes(16)
        mid = cmid.hex()
        now = clock.now_ms()
        content = await media.upload(
            path,
            mid=mid,
            ts=now,
            caption=caption,
            kind=kind,
            keep_metadata=keep_metadata,
            low_data=low_data,
            progress=progress,
        )
        await self._post(cmid, content, (mid, caption, now), timeout)
        return mid
