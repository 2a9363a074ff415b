"""Files in messages: encrypted, uploaded and described going out; fetched and checked coming in."""

import asyncio
import base64
import contextlib
import functools
import mimetypes
import os
import re
import secrets
import shutil
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from plauder.client.errors import (
    ClientError,
    ConnectionLost,
    NotConnected,
    Queued,
    ServerError,
)
from plauder.client.media_files import MediaKind, PreparedFile, prepare_file
from plauder.client.media_transfer import Growing, MediaTransfer, Progress, TransferFailed
from plauder.client.store import LocalStore, MediaJob
from plauder.clock import Clock
from plauder.crypto.media import EncryptedMedia, MediaDecryptor, MediaEncryptor, encrypted_size
from plauder.protocol.content import Media
from plauder.protocol.errors import ErrorCode

PIECE = 1024 * 1024  # bytes encrypted or written at a time (as the server's steps)


class MediaFileError(ClientError):
    """A file to send cannot be read, or a received file cannot be saved where asked."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """The file of a received or sent message: its description and a way to fetch it."""

    sender: str
    message_id: str
    content: Media
    _service: "MediaService" = field(repr=False, compare=False)

    @property
    def kind(self) -> str:
        """file, image, video, audio or voice."""
        return self.content.kind

    @property
    def name(self) -> str:
        """The file name the sender gave (maybe empty)."""
        return self.content.name

    @property
    def size(self) -> int:
        """Bytes of the file."""
        return self.content.size

    async def download(
        self, to: Path | str | None = None, progress: Progress | None = None
    ) -> Path:
        """Fetch, decrypt and verify the file; save it in (or as) `to`; return its path."""
        return await self._service.download(self, to, progress)


def _safe_name(name: str, fallback: str) -> str:
    """A file name without directories or control characters, never empty or hidden."""
    base = os.path.basename(name.replace("\\", "/"))
    base = re.sub(r"[\x00-\x1f\x7f/]", "_", base).strip().lstrip(".")
    return base[:200] or fallback


def _free_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/name (2)` and so on if that exists."""
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem} ({n}){suffix}"
        n += 1
    return candidate


class MediaService:
    """Uploads of outgoing files and downloads of received ones, for one client."""

    def __init__(
        self,
        number: str,
        store: LocalStore,
        transfer: MediaTransfer,
        workdir: Path,
        clock: Clock,
    ) -> None:
        self._number = number
        self._store = store
        self._transfer = transfer
        self._workdir = workdir
        self._clock = clock
        self._active: set[str] = set()  # jobs uploading in send_file, not for resume()
        self._resuming = False
        self.download_dir = workdir / "downloads"

    def attachment(self, sender: str, mid: str, content: Media) -> Attachment:
        """The attachment object apps get for a message's media."""
        return Attachment(sender, mid, content, self)

    async def upload(
        self,
        path: Path,
        *,
        mid: str,
        ts: int,
        caption: str,
        chat: tuple[str, bool],
        kind: MediaKind | None = None,
        keep_metadata: bool = False,
        low_data: bool = False,
        progress: Progress | None = None,
        timeout: float | None = None,
    ) -> Media:
        """Prepare, encrypt and upload a file for `chat` (its id, whether a group).

        Returns the description its message carries. Once the file is
        encrypted it is a job in the store, shown as a pending message: when
        the upload cannot finish now, this raises NotConnected and the job
        goes on at the next connection (`resume`) until its message is posted
        (`posted`); so it does when no server reserved the blob within
        `timeout` seconds. Other errors (ServerError media_too_large, an
        unreadable file) end it.
        """
        # copies (a cleaned photo, a voice note) go into a folder of their own until encrypted
        stage = self._workdir / "outgoing" / f"{mid}.stage"
        self._active.add(mid)
        try:
            out, size = await asyncio.to_thread(
                self._stage, path, kind, keep_metadata, low_data, stage
            )
        except BaseException:
            self._active.discard(mid)
            await asyncio.to_thread(shutil.rmtree, stage, True)
            raise
        blob = self._blob(mid)
        job = _Job(mid, chat, encrypted_size(size))
        stop = threading.Event()
        try:
            loop = asyncio.get_running_loop()
            written = Growing()
            # encrypt into the scratch file on a thread while the upload sends what is there
            encrypting = asyncio.ensure_future(
                asyncio.to_thread(
                    _encrypt_file,
                    out.path,
                    blob,
                    lambda n: loop.call_soon_threadsafe(written.advance, n),
                    stop,
                )
            )
            encrypting.add_done_callback(functools.partial(_failed, written=written))
            sending = asyncio.ensure_future(self._send_blob(job, blob, progress, written, timeout))
            try:
                await asyncio.wait({encrypting, sending}, return_when=asyncio.FIRST_COMPLETED)
                if sending.done() and not _later(sending.exception()):
                    await sending  # refused for good before the file was encrypted: raises
                result = (await encrypting).result
            except BaseException:
                stop.set()
                sending.cancel()
                await asyncio.gather(encrypting, sending, return_exceptions=True)
                await asyncio.to_thread(_remove, blob, None)
                await asyncio.to_thread(shutil.rmtree, stage, True)
                raise
            job.media = _describe(mid, ts, caption, out, result)
            self._save(job)  # from here on the file goes out, now or after a reconnection
            await asyncio.to_thread(shutil.rmtree, stage, True)
            try:
                await sending
            except Exception as exc:
                if not _later(exc):
                    self._give_up(job.id, blob)
                    raise
                raise Queued(mid, f"the upload did not finish: {exc}") from exc
            return job.described()
        finally:
            self._active.discard(mid)

    def posted(self, mid: str, media: Media) -> None:
        """The file's message is being queued: end its job (inside that transaction)."""
        self._store.drop_media_job(mid)
        self._store.replace_media(self._number, mid, media)

    async def forget_blob(self, mid: str) -> None:
        """Delete the encrypted copy of a file whose message was queued."""
        await asyncio.to_thread(_remove, self._blob(mid), None)

    async def resume(self, post: "PostJob") -> None:
        """Upload the files queued earlier and post their messages, oldest first.

        Run after each connection; a file whose upload fails for now waits for
        the next one, a file the server refuses for good is marked failed.
        """
        if self._resuming:
            return
        self._resuming = True
        try:
            jobs = self._store.media_jobs(self._number)
            await asyncio.to_thread(
                _remove_orphans, self._workdir / "outgoing", {j.id for j in jobs}, set(self._active)
            )
            for stored in jobs:
                if stored.id in self._active:
                    continue
                blob = self._blob(stored.id)
                job = _Job(stored.id, (stored.chat, stored.is_group), stored.media.enc_size)
                job.media, job.blob_id = stored.media, stored.media.media
                if not await asyncio.to_thread(blob.is_file):
                    self._give_up(job.id, blob)  # the encrypted copy is gone: nothing to send
                    continue
                try:
                    await self._send_blob(job, blob, None, None)
                except Exception as exc:
                    if _later(exc):
                        return  # at the next connection
                    if not isinstance(exc, ServerError):
                        raise
                    self._give_up(job.id, blob)
                    continue
                media = job.described()
                await post(stored, media, functools.partial(self.posted, job.id, media))
                await self.forget_blob(job.id)
        finally:
            self._resuming = False

    async def _send_blob(
        self,
        job: "_Job",
        blob: Path,
        progress: Progress | None,
        written: Growing | None,
        timeout: float | None = None,
    ) -> None:
        """Reserve the job's blob on the server if needed (within `timeout`), then upload it."""
        first = None
        if not job.blob_id:
            first = await asyncio.wait_for(self._transfer.reserve(job.enc_size), timeout)
            job.blob_id = first.media
            self._save(job)
        try:
            await self._transfer.upload(
                job.blob_id, job.enc_size, blob, progress, written, first=first
            )
        except ServerError as exc:
            if exc.code != ErrorCode.UNKNOWN_MEDIA or first is not None:
                raise
            # the reservation expired while the job waited: start the upload again
            job.blob_id = ""
            await self._send_blob(job, blob, progress, written, timeout)

    def _save(self, job: "_Job") -> None:
        """Store the job once its description is known, with its pending message."""
        if job.media is None:
            return
        media = job.described()
        with self._store.transaction():
            self._store.put_media_job(job.id, *job.chat, self._clock.now_ms())
            self._store.add_message(
                id=job.id,
                chat=job.chat[0],
                outgoing=True,
                sender=self._number,
                body=media.caption,
                ts=media.ts,
                server_ts=None,
                status="pending",
            )
            self._store.replace_media(self._number, job.id, media)

    def _give_up(self, mid: str, blob: Path) -> None:
        """End a job that cannot succeed: its message is marked failed."""
        with self._store.transaction():
            self._store.drop_media_job(mid)
            self._store.mark_failed(self._number, mid)
        _remove(blob, None)

    def _blob(self, mid: str) -> Path:
        return self._workdir / "outgoing" / f"{mid}.blob"

    def _stage(
        self, path: Path, kind: MediaKind | None, keep_metadata: bool, low_data: bool, scratch: Path
    ) -> tuple[PreparedFile, int]:
        """The file as it will be sent, and its size (blocking)."""
        if not path.is_file():
            raise MediaFileError(f"{path} is not a readable file")
        scratch.mkdir(parents=True, exist_ok=True)
        out = prepare_file(path, scratch, kind=kind, keep_metadata=keep_metadata, low_data=low_data)
        return out, out.path.stat().st_size

    async def to_wav(self, src: Path, dst: Path) -> int:
        """Convert a voice note or sound to WAV; returns its length in milliseconds."""
        from plauder.client import media_audio  # PyAV, loaded on first use

        return await asyncio.to_thread(media_audio.to_wav, src, dst)

    async def play(self, path: Path) -> None:
        """Play a voice note or sound on the default output (AudioUnavailable if none)."""
        from plauder.client import media_audio

        await asyncio.to_thread(media_audio.play, path)

    async def download(
        self,
        attachment: Attachment,
        to: Path | str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Fetch a message's file, check it against its description and save it.

        `to` is a folder (the sender's file name is kept) or a file path; by
        default the profile's downloads folder. Raises MediaError (from
        plauder.crypto.media) for a tampered, truncated or swapped blob, and
        ServerError unknown_media for one that expired; nothing is kept then.
        """
        content, mid = attachment.content, attachment.message_id
        target = await asyncio.to_thread(self._target, content, to)
        try:
            key = base64.b64decode(content.key, validate=True)
        except ValueError as exc:
            raise MediaFileError(f"message {mid} carries a malformed key") from exc
        decryptor = MediaDecryptor(
            key,
            enc_size=content.enc_size,
            sha256=content.sha256,
            size=content.size,
            plain_sha256=content.plain_sha256,
        )
        part = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        f = await asyncio.to_thread(part.open, "wb")
        try:

            async def write(piece: bytes) -> None:
                plain = decryptor.feed(piece)
                if plain:
                    await asyncio.to_thread(f.write, plain)

            await self._transfer.download(content.media, write, content.enc_size, progress)
            tail = decryptor.finish()
            await asyncio.to_thread(_finish_file, f, tail, part, target)
        finally:
            f.close()
            await asyncio.to_thread(_remove, part, None)
        with self._store.transaction():
            self._store.set_media_path(attachment.sender, mid, str(target))
        return target

    async def saved_or_download(self, attachment: Attachment) -> Path:
        """Where the file was saved before if it is still there, else a fresh download's path."""
        for sender, _, path in self._store.media(attachment.message_id, attachment.sender):
            if sender == attachment.sender and path and await asyncio.to_thread(Path(path).is_file):
                return Path(path)
        return await self.download(attachment)

    def _target(self, content: Media, to: Path | str | None) -> Path:
        name = _safe_name(content.name, content.id[:12] + _extension(content.mime))
        folder = (self.download_dir if to is None else Path(to).expanduser()).absolute()
        if folder.suffix and not folder.is_dir():  # a file's path: save it as that
            folder.parent.mkdir(parents=True, exist_ok=True)
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MediaFileError(f"cannot save in {folder}: {exc.strerror}") from exc
        return _free_path(folder, name)


def _extension(mime: str) -> str:
    """A file name suffix for a MIME type ("" if none is known)."""
    return mimetypes.guess_extension(mime) or ""


# answers after which an upload is tried again later; any other refusal is final
_LATER_CODES = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL})

PostJob = Callable[[MediaJob, Media, Callable[[], None]], Awaitable[None]]
"""Queue a job's message in the outbox, calling the callback in that transaction."""


def _later(error: BaseException | None) -> bool:
    """Whether an upload that failed with `error` may succeed at a later connection."""
    if isinstance(error, ServerError):
        return error.code in _LATER_CODES
    return isinstance(error, TransferFailed | ConnectionLost | NotConnected | TimeoutError)


@dataclass(slots=True)
class _Job:
    """An outgoing file while it is uploaded: its message, chat and blob."""

    id: str
    chat: tuple[str, bool]  # the contact's number or group id, and whether a group
    enc_size: int
    media: Media | None = None  # the description, once the file is encrypted
    blob_id: str = ""  # once the server reserved the blob

    def described(self) -> Media:
        """The description with the blob's id, as the message carries it."""
        assert self.media is not None
        return msgspec.structs.replace(self.media, media=self.blob_id)


def _describe(mid: str, ts: int, caption: str, out: PreparedFile, result: EncryptedMedia) -> Media:
    """The message describing an encrypted file (its blob id still empty)."""
    return Media(
        id=mid,
        ts=ts,
        kind=out.kind,
        media="",
        key=base64.b64encode(result.key).decode(),
        sha256=result.sha256,
        enc_size=result.enc_size,
        plain_sha256=result.plain_sha256,
        size=result.size,
        mime=out.mime,
        name=out.name,
        caption=caption,
        width=out.width,
        height=out.height,
        duration_ms=out.duration_ms,
        thumbnail=base64.b64encode(out.thumbnail).decode() if out.thumbnail else "",
        waveform=list(out.waveform),
    )


def _encrypt_file(
    src: Path, dst: Path, written: Callable[[int], object], stop: threading.Event
) -> MediaEncryptor:
    """Encrypt a file into a blob file, a piece at a time, telling how far it got (blocking)."""
    encryptor = MediaEncryptor()
    length = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        while piece := fin.read(PIECE):
            if stop.is_set():
                raise MediaFileError("the upload stopped")
            length += fout.write(encryptor.feed(piece))
            fout.flush()
            written(length)
        length += fout.write(encryptor.finish())
        fout.flush()
        os.fsync(fout.fileno())  # the job that names it must not outlive it
    written(length)
    return encryptor


def _failed(task: "asyncio.Future[MediaEncryptor]", written: Growing) -> None:
    """Pass an encryption thread's error to the upload waiting for its bytes."""
    error = None if task.cancelled() else task.exception()
    if error is not None:
        written.fail(error)


def _finish_file(f: BinaryIO, tail: bytes, part: Path, target: Path) -> None:
    """Write the last plaintext, make the file durable and give it its name (blocking)."""
    f.write(tail)
    f.flush()
    os.fsync(f.fileno())
    part.replace(target)


def _remove_orphans(folder: Path, jobs: set[str], active: set[str]) -> None:
    """Delete what a client that stopped left behind: encrypted copies of no job, and
    staged copies (a job needs only its encrypted copy); uploads under way keep theirs."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        mid = entry.name.split(".", 1)[0]
        if mid in active or (mid in jobs and entry.suffix == ".blob"):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _remove(entry, None)


def _remove(first: Path, second: Path | None) -> None:
    """Delete scratch files that may or may not exist (blocking)."""
    for path in (first, second):
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
