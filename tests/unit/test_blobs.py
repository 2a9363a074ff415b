"""DiskBlobStore: appends only at the offset held, one writer at a time, commits atomically."""

import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plauder.server.blobs import BlobBusy, BlobConflict, BlobMissing, DiskBlobStore

MEDIA = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[DiskBlobStore]:
    """A started store in a fresh folder."""
    store = DiskBlobStore(tmp_path / "media", threads=2)
    await store.start()
    yield store
    await store.close()


async def ids(store: DiskBlobStore) -> set[str]:
    """Every id the store has a file for."""
    return {media async for batch in store.scan() for media in batch}


async def test_append_resume_commit_read(blobs: DiskBlobStore) -> None:
    assert await blobs.held(MEDIA) == 0
    writer = await blobs.append(MEDIA, 0)
    await writer.write(b"hello ")
    assert await writer.close() == 6
    with pytest.raises(BlobConflict) as wrong:
        await blobs.append(MEDIA, 0)
    assert wrong.value.held == 6
    writer = await blobs.append(MEDIA, 6)
    await writer.write(b"world")
    assert await writer.close() == 11
    with pytest.raises(BlobMissing):
        await blobs.open(MEDIA)  # not complete yet
    with pytest.raises(BlobConflict):
        await blobs.commit(MEDIA, 12)
    await blobs.commit(MEDIA, 11)
    await blobs.commit(MEDIA, 11)  # again: nothing happens
    assert not (blobs.root / "partial" / MEDIA).exists()
    assert (blobs.root / "blobs" / MEDIA[:2] / MEDIA).stat().st_mode & 0o777 == 0o600
    assert await blobs.held(MEDIA) == 11
    with pytest.raises(BlobConflict):
        await blobs.append(MEDIA, 11)  # a complete blob takes no more
    reader = await blobs.open(MEDIA)
    assert reader.size == 11
    assert await reader.read(6, 100) == b"world"
    await reader.close()
    assert await ids(blobs) == {MEDIA}
    await blobs.delete(MEDIA)
    await blobs.delete(MEDIA)
    assert await ids(blobs) == set()


async def test_one_writer_at_a_time(blobs: DiskBlobStore) -> None:
    writer = await blobs.append(MEDIA, 0)
    with pytest.raises(BlobBusy):
        await blobs.append(MEDIA, 0)
    await writer.close()
    other = os.open(blobs.root / "partial" / MEDIA, os.O_RDONLY)  # say, another node
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(BlobBusy):
            await blobs.append(MEDIA, 0)
    finally:
        os.close(other)
    await (await blobs.append(MEDIA, 0)).close()


async def test_ids_that_are_not_blob_ids_name_nothing(blobs: DiskBlobStore) -> None:
    for bad in ("../../etc/passwd", "", MEDIA.upper(), MEDIA + "0"):
        with pytest.raises(BlobMissing):
            await blobs.append(bad, 0)
        with pytest.raises(BlobMissing):
            await blobs.open(bad)
    (blobs.root / "partial" / "notes.txt").write_text("not a blob")
    assert await ids(blobs) == set()
