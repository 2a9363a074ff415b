"""The PostgreSQL backend: a connection pool, writes batched into group commits."""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg

from plauder.protocol.frames import OutEnvelope
from plauder.server.errors import ServiceError, StorageError
from plauder.server.storage import queries
from plauder.server.storage.base import (
    Delivery,
    Sender,
)
from plauder.server.storage.batch import AckOp, SendOp, resolve
from plauder.server.storage.methods import SharedMethods
from plauder.server.storage.postgres_sends import DeviceCache, PgTx, write_batch
from plauder.server.storage.schema import POSTGRES_TYPES

T = TypeVar("T")
_Item = tuple[SendOp | AckOp, asyncio.Future[Any]]

log = logging.getLogger(__name__)

MAX_BATCH = 1024
# Batches committing at once per process. One: whatever queues during a commit shares
# the next one. Three lanes meant more and smaller commits, and higher latency at every
# load measured (docs/performance.md).
LANES = 1
MIGRATION_LOCK = 0x706C6175  # advisory lock id: one node migrates at a time
ACQUIRE_TIMEOUT = 5.0
RESERVED_FOR_WRITES = 3  # pooled connections reads may not take (the writer lane keeps one)
COMMAND_TIMEOUT = 10.0
ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def unavailable(exc: BaseException) -> StorageError:
    """The error a request gets when the database cannot answer."""
    return StorageError(f"database unavailable: {type(exc).__name__}: {exc}")


class PostgresStore(SharedMethods):
    """Store on PostgreSQL; `ok` is only answered after COMMIT.

    Sends and acks queue for a few writer lanes that each take everything
    waiting and commit it in one transaction with array statements; other
    operations run on a pooled connection of their own.
    """

    def __init__(self, url: str, pool_size: int = 8, gather_ms: float = 1.0) -> None:
        self._url = url
        self._pool_size = pool_size
        self._gather = gather_ms / 1000
        self._pool: asyncpg.Pool | None = None
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._writers: list[asyncio.Task[None]] = []
        self._devices = DeviceCache()
        # reads (feeds catching up, above all) leave connections for writes: a thousand
        # feeds reading at once must not make a send wait until it times out
        self._reads = asyncio.Semaphore(max(1, pool_size - RESERVED_FOR_WRITES))
        self.batches = 0
        self.operations = 0
        self.failures = 0
        self.version = 0

    async def start(self) -> None:
        """Connect and bring the schema up to date."""
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                command_timeout=COMMAND_TIMEOUT,
            )
        except (*ERRORS, ValueError) as exc:
            raise StorageError(f"cannot connect to the database: {exc}") from exc
        self.version = await self.upgrade()
        self._writers = [
            asyncio.get_running_loop().create_task(self._write_forever()) for _ in range(LANES)
        ]

    async def upgrade(self) -> int:
        """Apply missing migrations under an advisory lock; returns the schema version."""

        async def locked(tx: PgTx) -> int:
            await tx.con.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            return await queries.migrate(tx, POSTGRES_TYPES)

        return await self._query(locked)

    async def close(self) -> None:
        """Let queued writes finish, then close the pool."""
        for _ in self._writers:
            self._queue.put_nowait(None)
        if self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)
        self._writers = []
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def healthy(self) -> bool:
        """Whether the store is open and its writers run (the database may still be down)."""
        return self._pool is not None and all(not w.done() for w in self._writers)

    # --- running operations --------------------------------------------------------------

    async def _query(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, write: bool = True
    ) -> T:
        """Run a shared operation (storage/queries.py) on a pooled connection.

        When the database went away, every connection the pool holds is dead:
        they are all replaced on their next use rather than failing one request
        each. A read that hit a dead connection is tried once more at once.
        """
        if self._pool is None:
            raise StorageError("store is not running")
        for attempt in (1, 2):
            try:
                if not write:
                    async with self._reads, self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as con:
                        return await fn(PgTx(con), *args)
                async with (
                    self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as con,
                    con.transaction(),
                ):
                    return await fn(PgTx(con), *args)
            except ServiceError:
                raise
            except ERRORS as exc:
                lost = _connection_lost(exc) or not isinstance(exc, asyncpg.PostgresError)
                if lost:
                    await self._pool.expire_connections()
                if lost and not write and attempt == 1:
                    continue
                self.failures += 1
                raise unavailable(exc) from exc
        raise AssertionError("unreachable")

    def _enqueue(self, op: SendOp | AckOp) -> asyncio.Future[Any]:
        if self._pool is None or not self._writers:
            raise StorageError("store is not running")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, fut))
        return fut

    async def _write_forever(self) -> None:
        lane = _Lane()
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    return
                batch = [item]
                if self._queue.empty() and self._gather > 0:
                    await asyncio.sleep(self._gather)  # let neighbours share the commit
                while len(batch) < MAX_BATCH and not self._queue.empty():
                    nxt = self._queue.get_nowait()
                    if nxt is None:
                        self._queue.put_nowait(None)  # for this lane's next turn
                        break
                    batch.append(nxt)
                try:
                    await self._commit(lane, batch)
                except Exception as exc:  # never lose the writer: fail the batch instead
                    log.exception("batch commit failed")
                    await lane.drop(self._pool)
                    _fail_all(batch, unavailable(exc))
        finally:
            await lane.drop(self._pool)

    async def _commit(self, lane: "_Lane", batch: list[_Item]) -> None:
        """Store a batch in one statement; on a database error retry it op by op."""
        assert self._pool is not None
        sends = [(op, fut) for op, fut in batch if isinstance(op, SendOp)]
        acks = [(op, fut) for op, fut in batch if isinstance(op, AckOp)]
        try:
            con = await lane.connection(self._pool)
            counts, outcomes = await write_batch(
                con, self._devices, [op for op, _ in acks], [op for op, _ in sends]
            )
        except asyncpg.PostgresError as exc:
            if _connection_lost(exc):
                await lane.drop(self._pool)
                await self._pool.expire_connections()
            elif len(batch) > 1:
                for item in batch:
                    await self._commit(lane, [item])
                return
            self.failures += 1
            _fail_all(batch, unavailable(exc))
            return
        except (asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            await lane.drop(self._pool)
            await self._pool.expire_connections()
            self.failures += 1
            _fail_all(batch, unavailable(exc))
            return
        self.batches += 1
        self.operations += len(batch)
        for (_, fut), n in zip(acks, counts, strict=True):
            _settle(fut, n, None)
        for (_, fut), outcome in zip(sends, outcomes, strict=True):
            if isinstance(outcome, ServiceError):
                _settle(fut, None, outcome)
            else:
                _settle(fut, outcome, None)

    async def resolve_targets(
        self, sender: Sender, envelopes: list[OutEnvelope]
    ) -> tuple[Delivery, ...]:
        """Check recipients of an ephemeral message without storing it (eid 0)."""
        numbers = list(dict.fromkeys(env.to for env in envelopes))
        pks = await self._query(queries.device_pks, numbers, write=False)
        found = resolve(sender, envelopes, lambda number: pks.get(number, {}))
        return tuple(Delivery(pk, 0, env) for pk, env in found)


class _Lane:
    """A writer lane's own pooled connection, kept between batches (a release would
    reset it, one more round trip per commit) and dropped when it fails."""

    def __init__(self) -> None:
        self.con: Any = None

    async def connection(self, pool: asyncpg.Pool) -> Any:
        """The lane's connection, acquired anew when it has none or the server closed it."""
        if self.con is not None and _closed(self.con):
            await self.drop(pool)
        if self.con is None:
            self.con = await pool.acquire(timeout=ACQUIRE_TIMEOUT)
        return self.con

    async def drop(self, pool: asyncpg.Pool | None) -> None:
        """Give the connection back to the pool (which replaces a broken one)."""
        con, self.con = self.con, None
        if con is not None and pool is not None:
            with contextlib.suppress(*ERRORS):
                await pool.release(con, timeout=ACQUIRE_TIMEOUT)


def _closed(con: Any) -> bool:
    """Whether a pooled connection is gone (the pool takes one back once it closes)."""
    try:
        return bool(con.is_closed())
    except asyncpg.InterfaceError:
        return True


def _connection_lost(exc: BaseException) -> bool:
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.CannotConnectNowError,
    )


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(value)
    else:
        fut.set_exception(exc)


def _fail_all(batch: list[_Item], exc: BaseException) -> None:
    for _, fut in batch:
        _settle(fut, None, exc)
