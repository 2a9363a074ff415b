"""Media operations over a `Tx`, written once for SQLite and PostgreSQL.

A row of `media` describes one blob whose bytes live in the blob store
(server/blobs.py): who reserved it, its size, and when it dies (`expires`).
A reservation checks the account's quota and upload rate and inserts the row
in one transaction; on PostgreSQL it locks the account's row first, so two
nodes cannot both let an account pass its quota.
"""

from dataclasses import dataclass

from plauder.protocol.errors import ErrorCode
from plauder.server.errors import ServiceError
from plauder.server.storage.queries import Tx

HOUR_MS = 3_600_000
_COLUMNS = "id, account, device, size, created, expires, completed"


@dataclass(frozen=True, slots=True)
class MediaRow:
    """A blob as the database knows it."""

    media: str
    account: int
    device: int  # the reserving device's pk
    size: int
    created: int
    expires: int
    completed: int | None  # when the last byte arrived; None while uploading

    @property
    def complete(self) -> bool:
        """Whether every byte arrived."""
        return self.completed is not None

    def alive(self, now_ms: int) -> bool:
        """Whether the blob (or upload) has not expired."""
        return now_ms < self.expires


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """What an account may upload."""

    quota_bytes: int  # sizes of its unexpired blobs and uploads, together
    uploads_per_hour: int


async def reserve(
    tx: Tx,
    media: str,
    account: int,
    device: int,
    size: int,
    now_ms: int,
    expires_ms: int,
    limits: MediaLimits,
) -> None:
    """Record a new upload of `size` bytes, if the account's quota and rate allow it."""
    await tx.fetchone(f"SELECT id FROM accounts WHERE id = ?{tx.update_lock}", account)
    row = await tx.fetchone(
        "SELECT coalesce(sum(CASE WHEN expires > ? THEN size ELSE 0 END), 0), "
        "count(CASE WHEN created > ? THEN 1 END) FROM media WHERE account = ?",
        now_ms,
        now_ms - HOUR_MS,
        account,
    )
    used, recent = (int(row[0]), int(row[1])) if row else (0, 0)
    if used + size > limits.quota_bytes:
        raise ServiceError(
            ErrorCode.QUOTA_EXCEEDED,
            f"this upload would pass the account's media quota of {limits.quota_bytes} bytes "
            f"({used} in use)",
        )
    if recent >= limits.uploads_per_hour:
        raise ServiceError(
            ErrorCode.RATE_LIMITED,
            f"at most {limits.uploads_per_hour} uploads per hour: wait a little",
        )
    await tx.execute(
        "INSERT INTO media (id, account, device, size, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
        media,
        account,
        device,
        size,
        now_ms,
        expires_ms,
    )


async def lookup(tx: Tx, media: str) -> MediaRow | None:
    """The row of a blob, expired or not; None if there is none."""
    row = await tx.fetchone(f"SELECT {_COLUMNS} FROM media WHERE id = ?", media)
    if row is None:
        return None
    account, device, size, created, expires = (int(v) for v in row[1:6])
    completed = None if row[6] is None else int(row[6])
    return MediaRow(str(row[0]), account, device, size, created, expires, completed)


async def complete(tx: Tx, media: str, now_ms: int, expires_ms: int) -> bool:
    """Mark an upload complete, to expire at expires_ms; False if it was already."""
    changed = await tx.execute(
        "UPDATE media SET completed = ?, expires = ? WHERE id = ? AND completed IS NULL",
        now_ms,
        expires_ms,
        media,
    )
    return changed > 0


async def expired(tx: Tx, now_ms: int, limit: int) -> list[str]:
    """Ids of up to `limit` blobs and uploads that have expired, oldest first."""
    rows = await tx.fetchall(
        "SELECT id FROM media WHERE expires <= ? ORDER BY expires LIMIT ?", now_ms, limit
    )
    return [str(r[0]) for r in rows]


async def forget(tx: Tx, ids: list[str], now_ms: int) -> int:
    """Delete the rows of these blobs that are still expired; returns how many."""
    deleted = 0
    for media in ids:
        deleted += await tx.execute(
            "DELETE FROM media WHERE id = ? AND expires <= ?", media, now_ms
        )
    return deleted


async def known(tx: Tx, ids: list[str]) -> set[str]:
    """Which of these ids have a row."""
    if not ids:
        return set()
    marks = ", ".join("?" * len(ids))
    rows = await tx.fetchall(f"SELECT id FROM media WHERE id IN ({marks})", *ids)
    return {str(r[0]) for r in rows}
