"""The HTTP side of media: PUT, HEAD and GET /media/<id> with bearer tokens, streamed.

Bodies move in steps of at most `CHUNK` bytes between the socket and the blob
store, whose file I/O runs on threads, so a request holds about one step in
memory whatever its size. Errors are JSON `{"code", "message"}` with a
protocol `ErrorCode` (`offset` added where the client resumes from it).
"""

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from plauder.protocol.errors import ErrorCode
from plauder.server.blobs import ID, BlobBusy, BlobConflict, BlobError, BlobMissing, BlobWriter
from plauder.server.errors import StorageError
from plauder.server.media import MediaService
from plauder.server.media_tokens import Purpose
from plauder.server.metrics import Metrics
from plauder.server.storage.media import MediaRow

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes written to or read from the blob store per step
IDLE_SECONDS = 60.0  # an upload whose body sends nothing this long is ended
TAKEOVER_SECONDS = 10.0  # how long a PUT waits for an older one of the same blob to stop
_NUMBER = re.compile(r"[0-9]{1,19}")
_RANGE = re.compile(r"bytes=([0-9]{1,19})-([0-9]{0,19})")
_NO_STORE = {"Cache-Control": "no-store"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    """A request refused with a status and an error code (answered as JSON)."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = {**_NO_STORE, **(headers or {})}
        self.body = {"code": code.value, "message": message, **extra}

    def response(self) -> web.Response:
        """The JSON answer."""
        return web.json_response(self.body, status=self.status, headers=self.headers)


def _unknown() -> HttpError:
    return HttpError(404, ErrorCode.UNKNOWN_MEDIA, "no such media, or it expired")


@dataclass
class _Slot:
    """The PUTs of one blob in this process: one writes, later ones wait for their turn."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    writer: web.Request | None = None


class MediaHttp:
    """The handlers of /media/<id>."""

    def __init__(self, service: MediaService, metrics: Metrics) -> None:
        self._service = service
        self._blobs = service.blobs
        self._metrics = metrics
        self._slots: dict[str, _Slot] = {}

    def routes(self) -> list[web.RouteDef]:
        """PUT (append to an upload), HEAD (bytes held) and GET (read a blob)."""
        path = "/media/{media}"
        return [
            web.put(path, _answering(self.put), expect_handler=self.expect),
            web.head(path, _answering(self.head)),
            web.get(path, _answering(self.get), allow_head=False),
        ]

    # --- checks shared by the handlers ---------------------------------------------------

    def _authorize(self, request: web.Request, purpose: Purpose) -> tuple[str, int]:
        """The blob id and the token's holder, or 404 / 401."""
        media = request.match_info["media"]
        if not ID.fullmatch(media):
            raise _unknown()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        now = self._service.clock.now_ms()
        holder = self._service.tokens.check(token.strip(), purpose, media, now)
        if scheme.lower() != "bearer" or holder is None:
            raise HttpError(
                401,
                ErrorCode.INVALID_TOKEN,
                "the token is invalid or expired",
                {"WWW-Authenticate": 'Bearer realm="plauder media"'},
            )
        return media, holder

    async def _upload(self, request: web.Request) -> tuple[MediaRow, int]:
        """The upload a PUT or HEAD names, and the offset a PUT gives."""
        media, device = self._authorize(request, Purpose.PUT)
        row = await self._service.lookup(media)
        if row is None or row.device != device or not row.alive(self._service.clock.now_ms()):
            raise _unknown()
        if request.method != "PUT":
            return row, 0
        raw = request.headers.get("Upload-Offset", "")
        if not _NUMBER.fullmatch(raw):
            raise HttpError(400, ErrorCode.INVALID_REQUEST, "Upload-Offset must be a byte count")
        offset = int(raw)
        length = request.content_length
        if offset > row.size or (length is not None and offset + length > row.size):
            raise HttpError(
                413, ErrorCode.MEDIA_TOO_LARGE, f"the upload was reserved for {row.size} bytes"
            )
        return row, offset

    async def _held(self, row: MediaRow) -> int:
        return row.size if row.complete else await self._service.held(row.media)

    # --- PUT -----------------------------------------------------------------------------

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: refuse before the body is sent, or ask for it."""
        if request.headers.get("Expect", "").lower() != "100-continue":
            return web.json_response(
                {"code": ErrorCode.INVALID_REQUEST.value, "message": "unknown Expect"}, status=417
            )
        try:
            await self._upload(request)
        except HttpError as exc:
            return exc.response()
        except StorageError:
            return _unavailable()
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    async def put(self, request: web.Request) -> web.StreamResponse:
        """Append the body at Upload-Offset; complete the blob once every byte arrived."""
        row, offset = await self._upload(request)
        if row.complete:  # its answer was lost: say so again, if the client sent nothing more
            if offset != row.size:
                raise _conflict(row.size)
            if await request.content.readany():
                raise HttpError(413, ErrorCode.MEDIA_TOO_LARGE, "the blob is complete")
            return _progress(row.size, True)
        async with self._turn(row.media, request):
            try:
                writer = await self._blobs.append(row.media, offset)
            except BlobConflict as exc:
                raise _conflict(exc.held) from None
            except BlobBusy:
                raise _conflict(await self._service.held(row.media)) from None
            problem, held = await self._receive(request, writer, row.size - offset)
            if problem is not None:
                problem.body["offset"] = held
                raise problem
            if held == row.size:
                await self._service.complete(row)
        return _progress(held, held == row.size)

    async def _receive(
        self, request: web.Request, writer: BlobWriter, room: int
    ) -> tuple[HttpError | None, int]:
        """Copy the body to the writer, at most `room` bytes; always closes it.

        Returns why the body was not taken whole (None if it was) and the bytes
        the upload holds now. What arrived before a disconnect is kept.
        """
        problem: HttpError | None = None
        buf = bytearray()
        taken = 0
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_SECONDS):
                        chunk = await request.content.readany()
                except TimeoutError:
                    problem = HttpError(408, ErrorCode.INVALID_REQUEST, "the body stalled")
                    break
                except OSError:  # the client went away: keep what arrived
                    break
                if not chunk:
                    break
                if taken + len(chunk) > room:
                    problem = HttpError(
                        413, ErrorCode.MEDIA_TOO_LARGE, "the body passes the reserved size"
                    )
                    break
                buf += chunk
                taken += len(chunk)
                if len(buf) >= CHUNK:
                    await self._write(writer, buf)
            await self._write(writer, buf)
        finally:
            held = await writer.close()
        return problem, held

    async def _write(self, writer: BlobWriter, buf: bytearray) -> None:
        if buf:
            await writer.write(bytes(buf))
            self._metrics.media_bytes_uploaded += len(buf)
            buf.clear()

    @contextlib.asynccontextmanager
    async def _turn(self, media: str, request: web.Request) -> AsyncIterator[None]:
        """Write one blob from one request at a time in this process.

        An older PUT of the same blob is cut off (its connection closed; what it
        received is kept): a client only starts another after losing the first.
        """
        slot = self._slots.setdefault(media, _Slot())
        slot.users += 1
        try:
            if slot.writer is not None and slot.writer.transport is not None:
                slot.writer.transport.close()
            try:
                async with asyncio.timeout(TAKEOVER_SECONDS):
                    await slot.lock.acquire()
            except TimeoutError:
                raise _conflict(await self._service.held(media)) from None
            slot.writer = request
            try:
                yield
            finally:
                slot.writer = None
                slot.lock.release()
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[media]

    # --- HEAD and GET --------------------------------------------------------------------

    async def head(self, request: web.Request) -> web.StreamResponse:
        """Upload-Offset: the bytes held of an upload (to resume after a lost answer)."""
        row, _ = await self._upload(request)
        held = await self._held(row)
        headers = {"Upload-Offset": str(held), "Upload-Length": str(row.size), **_NO_STORE}
        return web.Response(status=200, headers=headers)

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Stream a complete blob, or the part a `Range: bytes=<start>-[<end>]` asks for."""
        media, _ = self._authorize(request, Purpose.GET)
        row = await self._service.lookup(media)
        if row is None or not row.complete or not row.alive(self._service.clock.now_ms()):
            raise _unknown()
        try:
            reader = await self._blobs.open(media)
        except BlobMissing:
            log.warning("a complete blob's file is missing from the media folder")
            raise _unknown() from None
        try:
            start, end = _range(request.headers.get("Range", ""), reader.size)
            response = web.StreamResponse(status=200, headers=_NO_STORE)
            if (start, end) != (0, reader.size):
                response.set_status(206)
                response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{reader.size}"
            response.content_type = "application/octet-stream"
            response.headers["Accept-Ranges"] = "bytes"
            response.content_length = end - start
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):  # the client went away
                while start < end:
                    data = await reader.read(start, min(CHUNK, end - start))
                    if not data:
                        break
                    await response.write(data)
                    start += len(data)
                    self._metrics.media_bytes_downloaded += len(data)
                await response.write_eof()
            return response
        finally:
            await reader.close()


def _range(header: str, size: int) -> tuple[int, int]:
    """[start, end) of a `bytes=<start>-[<end>]` range; the whole blob without one.

    Other forms (several ranges, suffixes) are ignored, as HTTP allows.
    """
    found = _RANGE.fullmatch(header.strip())
    if found is None:
        return 0, size
    start = int(found[1])
    end = min(int(found[2]) + 1, size) if found[2] else size
    if start >= size or start >= end:
        raise HttpError(
            416,
            ErrorCode.INVALID_REQUEST,
            f"the range starts past the blob's {size} bytes",
            {"Content-Range": f"bytes */{size}"},
        )
    return start, end


def _progress(held: int, complete: bool) -> web.Response:
    return web.json_response({"offset": held, "complete": complete}, headers=_NO_STORE)


def _conflict(held: int) -> HttpError:
    return HttpError(
        409, ErrorCode.INVALID_REQUEST, f"the upload holds {held} bytes: resume there", offset=held
    )


def _unavailable() -> web.Response:
    return HttpError(503, ErrorCode.UNAVAILABLE, "storage unavailable: try again").response()


def _answering(handler: Handler) -> Handler:
    """Turn refusals and failures into JSON answers; log unexpected ones without ids."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            return exc.response()
        except ConnectionError:  # the client went away; nobody reads the answer
            return _unavailable()
        except (StorageError, BlobError, OSError) as exc:
            log.warning("media %s failed: %s", request.method, type(exc).__name__)
            return _unavailable()
        except Exception as exc:
            log.error("media %s failed: %s", request.method, type(exc).__name__)
            return HttpError(500, ErrorCode.INTERNAL, "internal error").response()

    return answer
