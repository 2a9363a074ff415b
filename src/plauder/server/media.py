"""Media: reserves uploads and hands out tokens for the HTTP side, and expires blobs.

Over the WebSocket a device asks for a token (`media_upload`, `media_download`);
the bytes themselves move over HTTP (server/media_http.py). The server never
sees a key: a blob is ciphertext the client encrypted, named by a random
128-bit id that travels only inside end-to-end encrypted messages.
"""

import logging
import secrets

from plauder.clock import Clock
from plauder.crypto.media import encrypted_size
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import MediaDownload, MediaRequest, MediaToken, MediaUpload
from plauder.server.blobs import ID, BlobStore
from plauder.server.config import Config
from plauder.server.errors import ServiceError, StorageError
from plauder.server.media_tokens import MediaTokens, Purpose
from plauder.server.metrics import Metrics
from plauder.server.storage import Store
from plauder.server.storage import media as ops
from plauder.server.storage.base import Sender

log = logging.getLogger(__name__)

MEDIA_FRAMES = MediaRequest.__args__
DAY_MS = 86_400_000
UPLOAD_WINDOW_MS = DAY_MS  # an unfinished upload is dropped a day after it was reserved
SWEEP_BATCH = 500


class MediaService:
    """Serves the media frames of authenticated devices; the HTTP side shares its checks."""

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        tokens: MediaTokens,
        clock: Clock,
        config: Config,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.tokens = tokens
        self.clock = clock
        self._config = config
        self._metrics = metrics
        self._limits = ops.MediaLimits(config.media_quota_bytes, config.media_uploads_per_hour)

    async def handle(self, frame: MediaRequest, actor: Sender) -> MediaToken:
        """Answer one media frame with a token."""
        now = self.clock.now_ms()
        match frame:
            case MediaUpload(media=""):
                return await self._reserve(frame, actor, now)
            case MediaUpload():
                return await self._resume(frame, actor, now)
            case MediaDownload():
                row = await self.lookup(frame.media)
                if row is None or not row.complete or not row.alive(now):
                    raise ServiceError(ErrorCode.UNKNOWN_MEDIA, "no such media, or it expired")
                return self._token(frame.id, Purpose.GET, row, actor.account_id, 0, now)

    async def _reserve(self, frame: MediaUpload, actor: Sender, now: int) -> MediaToken:
        # the limit is the file's: its blob may be larger by the encryption's header and tags
        limit = self._config.max_media_bytes
        if frame.size <= 0:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "size must be positive")
        if frame.size > encrypted_size(limit):
            raise ServiceError(ErrorCode.MEDIA_TOO_LARGE, f"a file may have at most {limit} bytes")
        media = secrets.token_hex(16)
        expires = now + UPLOAD_WINDOW_MS
        await self.store.run(
            ops.reserve,
            media,
            actor.account_id,
            actor.device_pk,
            frame.size,
            now,
            expires,
            self._limits,
        )
        self._metrics.media_uploads_reserved += 1
        row = ops.MediaRow(media, actor.account_id, actor.device_pk, frame.size, now, expires, None)
        return self._token(frame.id, Purpose.PUT, row, actor.device_pk, 0, now)

    async def _resume(self, frame: MediaUpload, actor: Sender, now: int) -> MediaToken:
        row = await self.lookup(frame.media)
        if row is None or row.device != actor.device_pk or not row.alive(now):
            raise ServiceError(ErrorCode.UNKNOWN_MEDIA, "no upload of this device with that id")
        held = row.size if row.complete else await self.held(row.media)
        return self._token(frame.id, Purpose.PUT, row, actor.device_pk, held, now)

    def _token(
        self, request_id: int, purpose: Purpose, row: ops.MediaRow, holder: int, held: int, now: int
    ) -> MediaToken:
        expires = now + self._config.media_token_seconds * 1000
        return MediaToken(
            id=request_id,
            media=row.media,
            token=self.tokens.issue(purpose, row.media, holder, expires),
            size=row.size,
            offset=held,
            expires=expires,
        )

    async def lookup(self, media: str) -> ops.MediaRow | None:
        """The row of a blob id (None for an id of the wrong form)."""
        if not ID.fullmatch(media):
            return None
        return await self.store.run(ops.lookup, media, write=False)

    async def held(self, media: str) -> int:
        """Bytes the blob store holds of an upload."""
        try:
            return await self.blobs.held(media)
        except OSError as exc:
            raise StorageError(f"media storage failed: {exc.strerror}") from exc

    async def complete(self, row: ops.MediaRow) -> None:
        """Make an upload whose last byte arrived a complete blob: on disk, then in the database.

        Done again after a crash between the two, it finishes what was left.
        """
        await self.blobs.commit(row.media, row.size)
        now = self.clock.now_ms()
        retention = self._config.media_retention_days * DAY_MS
        if await self.store.run(ops.complete, row.media, now, now + retention):
            self._metrics.media_blobs_stored += 1

    async def sweep(self) -> int:
        """Delete expired blobs and uploads, then files no row knows; returns rows deleted."""
        now = self.clock.now_ms()
        deleted = 0
        while True:
            ids = await self.store.run(ops.expired, now, SWEEP_BATCH, write=False)
            for media in ids:  # files first: a row left behind is swept again next time
                await self.blobs.delete(media)
            deleted += await self.store.run(ops.forget, ids, now)
            if len(ids) < SWEEP_BATCH:
                break
        async for batch in self.blobs.scan():
            for start in range(0, len(batch), SWEEP_BATCH):
                part = batch[start : start + SWEEP_BATCH]
                known = await self.store.run(ops.known, part, write=False)
                for media in set(part) - known:
                    await self.blobs.delete(media)
        return deleted
