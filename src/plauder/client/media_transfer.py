"""Moving encrypted blobs over HTTP: uploads and downloads that resume where they stopped."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp

from plauder.client.connection import next_request_id
from plauder.client.errors import ClientError, ConnectionLost, ServerError
from plauder.client.link import Link
from plauder.crypto.media import MediaTruncated
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import MediaDownload, MediaToken, MediaUpload

PIECE = 1024 * 1024  # bytes read from disk or the network at a time (as the server's steps)
ATTEMPTS = 8  # tries of one transfer before giving up; each resumes where the last stopped
BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class TransferFailed(ClientError):
    """A blob could not be moved after several attempts; the last reason is the message."""


def http_base(server: str) -> str:
    """The HTTP URL of a server given as http(s):// or ws(s)://host:port."""
    base = server.rstrip("/")
    if base.startswith("wss://"):
        return "https://" + base[len("wss://") :]
    if base.startswith("ws://"):
        return "http://" + base[len("ws://") :]
    if not base.startswith(("http://", "https://")):
        return "http://" + base
    return base


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    """Raise ServerError with the code of an HTTP error answer."""
    if resp.status < 400:
        return
    code, message = ErrorCode.INTERNAL.value, f"HTTP {resp.status}"
    with contextlib.suppress(aiohttp.ContentTypeError, ValueError, aiohttp.ClientError):
        data = await resp.json()
        if isinstance(data, dict):
            code = str(data.get("code", code))
            message = str(data.get("message", message))
    raise ServerError(code, message)


class MediaTransfer:
    """Uploads and downloads of blobs on the server this device is connected to."""

    def __init__(self, link: Link) -> None:
        self._link = link

    def _session(self) -> tuple[aiohttp.ClientSession, str]:
        session = self._link.session
        server = self._link.server
        if session is None or server is None:
            raise ConnectionLost("not connected")
        return session, http_base(server)

    async def _token(self, frame: MediaUpload | MediaDownload) -> MediaToken:
        answer = await self._link.request(frame)
        assert isinstance(answer, MediaToken)
        return answer

    async def reserve(self, size: int) -> MediaToken:
        """Reserve a blob of `size` bytes on the server; its id and a token to upload it.

        Raises ServerError media_too_large, quota_exceeded or rate_limited.
        """
        return await self._token(MediaUpload(id=next_request_id(), size=size))

    async def upload(
        self,
        media: str,
        size: int,
        path: Path,
        progress: Progress | None = None,
        written: "Growing | None" = None,
        first: MediaToken | None = None,
    ) -> None:
        """Send the file at `path` as blob `media`, resuming at the offset the server holds.

        Each attempt asks for a token and that offset, but the first may use
        `first` (the reservation's token). With `written`, the file is still
        being written: each piece is sent once it is there.
        """

        async def attempt() -> None:
            nonlocal first
            token = first or await self._token(
                MediaUpload(id=next_request_id(), size=size, media=media)
            )
            first = None
            if token.offset >= size:
                if progress is not None:
                    progress(size, size)
                return
            await self._put(token, path, progress, written)

        await _retrying(attempt, "upload")

    async def _put(
        self, token: MediaToken, path: Path, progress: Progress | None, written: "Growing | None"
    ) -> None:
        session, base = self._session()
        headers = {
            "Authorization": f"Bearer {token.token}",
            "Upload-Offset": str(token.offset),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(token.size - token.offset),
        }
        async with session.put(
            f"{base}/media/{token.media}",
            data=_read_from(path, token.offset, token.size, progress, written),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=60, sock_connect=10),
        ) as resp:
            if resp.status == 409:  # the server holds another offset: ask again, resume there
                raise ConnectionLost("the upload's offset moved")
            await _raise_for(resp)
            answer = await resp.json()
        if not (isinstance(answer, dict) and answer.get("complete")):
            raise ConnectionLost("the server holds only part of the blob")

    async def download(
        self,
        media: str,
        write: Callable[[bytes], Awaitable[None]],
        size: int,
        progress: Progress | None = None,
    ) -> None:
        """Pass blob `media`'s bytes to `write` in order, each once, resuming on failure.

        Raises ServerError unknown_media when the blob expired or never existed.
        """
        done = 0

        async def attempt() -> None:
            nonlocal done
            token = await self._token(MediaDownload(id=next_request_id(), media=media))
            async for piece in self._get(token, done, size):
                await write(piece)
                done += len(piece)
                if progress is not None:
                    progress(done, size)
            if done != size:  # the answer ended where it said it would: the blob is short
                raise MediaTruncated(f"the server's blob ends after {done} of {size} bytes")

        await _retrying(attempt, "download")

    async def _get(self, token: MediaToken, start: int, size: int) -> AsyncIterator[bytes]:
        """The blob's bytes from `start` on (skipping what a server ignoring Range repeats)."""
        session, base = self._session()
        headers = {"Authorization": f"Bearer {token.token}"}
        if start:
            headers["Range"] = f"bytes={start}-"
        async with session.get(
            f"{base}/media/{token.media}",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=60, sock_connect=10),
        ) as resp:
            await _raise_for(resp)
            skip = start if resp.status != 206 else 0
            at = start
            async for piece in resp.content.iter_chunked(PIECE):
                if skip:
                    cut = min(skip, len(piece))
                    piece, skip = piece[cut:], skip - cut
                    if not piece:
                        continue
                if at + len(piece) > size:
                    raise ServerError(ErrorCode.INVALID_REQUEST, "the blob is too long")
                at += len(piece)
                yield piece


async def _retrying(attempt: Callable[[], Awaitable[None]], what: str) -> None:
    """Run a transfer's attempts until one finishes; each resumes where the last stopped."""
    last: Exception | None = None
    for n in range(ATTEMPTS):
        try:
            await attempt()
            return
        except ServerError as exc:
            if exc.code not in (ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL):
                raise
            last = exc
        except (aiohttp.ClientError, ConnectionError, TimeoutError, ConnectionLost) as exc:
            last = exc
        await asyncio.sleep(BACKOFF[min(n, len(BACKOFF) - 1)])
    raise TransferFailed(f"the {what} did not finish: {last}")


class Growing:
    """How far another thread has written a file; readers wait for the bytes they need."""

    def __init__(self) -> None:
        self.length = 0
        self.error: BaseException | None = None
        self._changed = asyncio.Event()

    def advance(self, length: int) -> None:
        """The file now holds `length` bytes (called on the event loop)."""
        self.length = length
        self._changed.set()

    def fail(self, error: BaseException) -> None:
        """The writer stopped with an error; waiting readers get it."""
        self.error = error
        self._changed.set()

    async def wait_for(self, length: int) -> None:
        """Return once the file holds `length` bytes; raise the writer's error if it failed."""
        while self.length < length:
            if self.error is not None:
                raise self.error
            self._changed.clear()
            await self._changed.wait()


async def _read_from(
    path: Path, offset: int, size: int, progress: Progress | None, written: Growing | None
) -> AsyncIterator[bytes]:
    """The bytes of a file from `offset` to `size`, a piece at a time."""
    if progress is not None:
        progress(offset, size)  # where this attempt starts: 0, or where the server stopped
    if written is not None:
        await written.wait_for(min(offset + PIECE, size))
    with path.open("rb") as f:
        f.seek(offset)
        done = offset
        while done < size:
            if written is not None:
                await written.wait_for(min(done + PIECE, size))
            piece = await asyncio.to_thread(f.read, min(PIECE, size - done))
            if not piece:
                raise ClientError(f"{path} is shorter than {size} bytes")
            yield piece
            done += len(piece)
            if progress is not None:
                progress(done, size)
