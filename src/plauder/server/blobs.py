"""Where media ciphertext lives: the `BlobStore` protocol and `DiskBlobStore`, a folder.

The server appends to an upload only at the offset it holds, turns a finished
upload into a complete blob in one step (`commit`), reads complete blobs from
any offset, and deletes. Blobs are named by their id (32 lowercase hex
characters); an unfinished upload is kept apart from complete blobs.

`DiskBlobStore` serves one node, or every node of a cluster when its folder is
a shared volume (uploads take an advisory lock on their file). An
S3-compatible object store can implement the same protocol later: multipart
uploads for the parts, a completion for `commit`, ranged GETs for reading.

Errors:
    BlobError
      +-- BlobConflict  the upload holds another number of bytes than the writer's offset
      +-- BlobBusy      another writer appends to this upload right now
      +-- BlobMissing   no such upload or blob
"""

import asyncio
import fcntl
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from plauder.errors import PlauderError

T = TypeVar("T")
ID = re.compile(r"[0-9a-f]{32}")


class BlobError(PlauderError):
    """A blob operation failed."""


class BlobConflict(BlobError):
    """The upload holds `held` bytes, not the offset the writer asked for."""

    def __init__(self, held: int) -> None:
        super().__init__(f"the upload holds {held} bytes")
        self.held = held


class BlobBusy(BlobError):
    """Another writer appends to this upload right now."""


class BlobMissing(BlobError):
    """There is no such upload or blob."""


class BlobWriter(Protocol):
    """An upload open for appending, held by one writer at a time."""

    async def write(self, data: bytes) -> None:
        """Append bytes."""
        ...

    async def close(self) -> int:
        """Make what was written durable, release the upload; returns the bytes it holds."""
        ...


class BlobReader(Protocol):
    """A complete blob open for reading."""

    size: int

    async def read(self, start: int, count: int) -> bytes:
        """Up to `count` bytes from `start` (fewer only at the end)."""
        ...

    async def close(self) -> None:
        """Release the blob."""
        ...


class BlobStore(Protocol):
    """Storage of media blobs by id; every method may block only a worker, never the loop."""

    async def start(self) -> None:
        """Make the store ready (create folders, connect)."""
        ...

    async def close(self) -> None:
        """Finish running operations and release resources."""
        ...

    async def held(self, media: str) -> int:
        """Bytes held of an upload (a complete blob's size; 0 if nothing was written)."""
        ...

    async def append(self, media: str, offset: int) -> BlobWriter:
        """Open an upload for appending at `offset`, which must be the bytes it holds.

        Raises BlobConflict (another offset; also once the blob is complete) or
        BlobBusy (another writer has it).
        """
        ...

    async def commit(self, media: str, size: int) -> None:
        """Turn an upload of exactly `size` bytes into a complete blob, durably.

        Committing a complete blob again does nothing. Raises BlobMissing or
        BlobConflict (the upload holds another size).
        """
        ...

    async def open(self, media: str) -> BlobReader:
        """Open a complete blob for reading; raises BlobMissing."""
        ...

    async def delete(self, media: str) -> None:
        """Delete an upload or blob; nothing happens if there is none."""
        ...

    def scan(self) -> AsyncIterator[list[str]]:
        """Every id with an upload or a blob, a batch at a time."""
        ...


class DiskBlobStore:
    """Blobs as files in a folder: `partial/<id>` while uploading, `blobs/<id[:2]>/<id>` after.

    Every file operation runs on a small pool of threads of its own.
    """

    def __init__(self, root: Path, threads: int = 8) -> None:
        self.root = root
        self._partial = root / "partial"
        self._blobs = root / "blobs"
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="blobs")

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _paths(self, media: str) -> tuple[Path, Path]:
        """(partial, complete) file of an id."""
        if not ID.fullmatch(media):
            raise BlobMissing("not a blob id")
        return self._partial / media, self._blobs / media[:2] / media

    async def start(self) -> None:
        """Create the folders (mode 0700)."""

        def make() -> None:
            for folder in (self.root, self._partial, self._blobs):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)

        await self._run(make)

    async def close(self) -> None:
        """Let running file operations finish and stop the threads."""
        await asyncio.to_thread(self._pool.shutdown)

    async def held(self, media: str) -> int:
        """Bytes held of an upload (a complete blob's size; 0 if nothing was written)."""
        partial, complete = self._paths(media)

        def size() -> int:
            for path in (complete, partial):
                try:
                    return path.stat().st_size
                except FileNotFoundError:
                    continue
            return 0

        return await self._run(size)

    async def append(self, media: str, offset: int) -> BlobWriter:
        """Open an upload for appending at `offset` (see BlobStore.append)."""
        partial, complete = self._paths(media)

        def open_() -> _DiskWriter:
            try:
                raise BlobConflict(complete.stat().st_size)
            except FileNotFoundError:
                pass
            created = not partial.exists()
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BlobBusy("another upload of this blob is running") from None
            held = os.fstat(fd).st_size
            if held != offset:
                os.close(fd)
                raise BlobConflict(held)
            os.lseek(fd, 0, os.SEEK_END)
            return _DiskWriter(self._run, fd, self._partial if created else None)

        return await self._run(open_)

    async def commit(self, media: str, size: int) -> None:
        """Turn an upload of exactly `size` bytes into a complete blob (see BlobStore.commit)."""
        partial, complete = self._paths(media)

        def move() -> None:
            if complete.exists():
                held = complete.stat().st_size
                if held != size:
                    raise BlobConflict(held)
                return
            try:
                fd = os.open(partial, os.O_RDONLY)
            except FileNotFoundError:
                raise BlobMissing("no such upload") from None
            try:
                held = os.fstat(fd).st_size
                if held != size:
                    raise BlobConflict(held)
                os.fsync(fd)
            finally:
                os.close(fd)
            complete.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(partial, complete)
            for folder in (complete.parent, self._partial, self._blobs):
                _fsync_dir(folder)

        await self._run(move)

    async def open(self, media: str) -> BlobReader:
        """Open a complete blob for reading; raises BlobMissing."""
        _, complete = self._paths(media)

        def open_() -> _DiskReader:
            try:
                fd = os.open(complete, os.O_RDONLY)
            except FileNotFoundError:
                raise BlobMissing("no such blob") from None
            return _DiskReader(self._run, fd, os.fstat(fd).st_size)

        return await self._run(open_)

    async def delete(self, media: str) -> None:
        """Delete an upload or blob; nothing happens if there is none."""
        paths = self._paths(media)

        def unlink() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        await self._run(unlink)

    async def scan(self) -> AsyncIterator[list[str]]:
        """Every id with an upload or a blob: one batch per folder."""
        folders = [self._partial, *await self._run(_subfolders, self._blobs)]
        for folder in folders:
            yield await self._run(_ids_in, folder)


Run = Callable[..., Awaitable[Any]]  # runs a blocking function on the store's threads


class _DiskWriter:
    """An upload file, locked, open for appending; `dirty` is a folder to fsync on close."""

    def __init__(self, run: Run, fd: int, dirty: Path | None) -> None:
        self._run = run
        self._fd = fd
        self._dirty = dirty

    async def write(self, data: bytes) -> None:
        """Append bytes."""
        await self._run(_write_all, self._fd, data)

    async def close(self) -> int:
        """fsync, unlock and close; returns the bytes the upload holds."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            raise BlobError("the upload is closed")

        def finish() -> int:
            try:
                os.fsync(fd)
                if self._dirty is not None:
                    _fsync_dir(self._dirty)
                return os.fstat(fd).st_size
            finally:
                os.close(fd)  # releases the lock

        size: int = await self._run(finish)
        return size


class _DiskReader:
    """A complete blob file open for reading."""

    def __init__(self, run: Run, fd: int, size: int) -> None:
        self._run = run
        self._fd = fd
        self.size = size

    async def read(self, start: int, count: int) -> bytes:
        """Up to `count` bytes from `start` (fewer only at the end)."""
        data: bytes = await self._run(os.pread, self._fd, count, start)
        return data

    async def close(self) -> None:
        """Close the file."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _ids_in(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if ID.fullmatch(e.name)]
    except FileNotFoundError:
        return []
