"""The SQLite backend: one connection on one thread, writes batched into group commits."""

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from plauder.protocol.frames import DeviceKeys, OutEnvelope, SignedKey
from plauder.server.errors import ServiceError, StorageError
from plauder.server.storage import queries
from plauder.server.storage.base import (
    Delivery,
    Registration,
    Sender,
    StoredMessage,
)
from plauder.server.storage.batch import AckOp, SendOp, resolve
from plauder.server.storage.methods import SharedMethods
from plauder.server.storage.schema import SQLITE_TYPES
from plauder.server.storage.sqlite_sends import EnvelopeIds, SqliteTx, delete_acked, store_sends

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
_Item = tuple[Op | SendOp | AckOp, asyncio.Future[Any]]
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]
_OP_ERRORS = (sqlite3.Error, ValueError, OverflowError, TypeError)

log = logging.getLogger(__name__)

MAX_BATCH = 1024
# Acks delete rows nobody waits for, while a send's sender waits for its COMMIT: a commit
# with sends or other work carries at most this many acked envelopes, the rest going into
# the commits after it; a commit of acks alone takes up to the larger budget.
ACK_BUDGET_BESIDE = 512
ACK_BUDGET_ALONE = 8192
CHECKPOINT_SECONDS = 0.5
BACKSTOP_CHECKPOINT_PAGES = 20_000  # about 80 MB of WAL before the writer checkpoints itself
DEVICE_CACHE_SIZE = 100_000


class SqliteStore(SharedMethods):
    """Store on a SQLite file in WAL mode; `ok` is only answered after COMMIT."""

    def __init__(self, path: Path, synchronous: str = "full", gather_ms: float = 1.0) -> None:
        self._path = path
        self._gather = gather_ms / 1000
        self._synchronous = synchronous.upper()
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.operations = 0
        self.version = 0
        self._devices: dict[str, dict[int, int]] = {}  # worker thread only
        self._group_devices: dict[object, object] = {}  # worker thread only (groups.py)
        self._ids: EnvelopeIds | None = None  # worker thread only
        self._migrated = False
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()

    async def start(self) -> None:
        """Open the database on its thread and apply missing migrations."""
        self._loop = asyncio.get_running_loop()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sqlite", daemon=True)
        self._thread.start()
        await ready
        self.version = await self._query(queries.migrate, SQLITE_TYPES)
        self._migrated = True
        self._stop_checkpoints.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_forever, name="sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    async def close(self) -> None:
        """Let queued operations finish, then close the connection."""
        if self._thread is None:
            return
        loop = asyncio.get_running_loop()
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            await loop.run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        self._queue.put(None)
        await loop.run_in_executor(None, self._thread.join)
        self._thread = None

    def _checkpoint_forever(self) -> None:
        """Copy the WAL into the database on a connection of its own.

        SQLite's automatic checkpoint would run inside a COMMIT on the writer
        thread, holding every request of that batch; a PASSIVE checkpoint here
        never blocks the writer. The writer keeps a high automatic threshold as
        a backstop should this thread fall behind.
        """
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("no checkpoint thread: %s", exc)
            return
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("checkpoint failed: %s", exc)
        finally:
            conn.close()

    # --- the worker thread -------------------------------------------------------------

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=FAST")  # zero deleted envelopes where free
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            err = StorageError(f"cannot open database {self._path}: {exc}")
            loop.call_soon_threadsafe(_fail, ready, err)
            return
        loop.call_soon_threadsafe(_settle_one, ready, None)
        acks: deque[_Item] = deque()  # acks put off while sends and other work wait
        try:
            stop = False
            while not stop:
                batch, stop = self._take(block=not acks)
                urgent = [item for item in batch if not isinstance(item[0], AckOp)]
                acks.extend(item for item in batch if isinstance(item[0], AckOp))
                budget: int | None = ACK_BUDGET_BESIDE if urgent else ACK_BUDGET_ALONE
                if stop:
                    budget = None  # shutting down: everything goes
                work = urgent + _take_acks(acks, budget)
                if work:
                    results = self._execute(conn, work)
                    loop.call_soon_threadsafe(_settle, results)
        finally:
            conn.close()

    def _take(self, block: bool) -> tuple[list[_Item], bool]:
        """What is queued now (waiting for the first item if `block`); True at the end.

        A lone write waits a moment (`gather_ms`) for neighbours to share its
        COMMIT, and so its fsync.
        """
        batch: list[_Item] = []
        if block:
            item = self._queue.get()
            if item is None:
                return batch, True
            batch.append(item)
        waited = False
        while len(batch) < MAX_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                if waited or self._gather <= 0 or not batch:
                    break
                waited = True
                time.sleep(self._gather)
                continue
            if nxt is None:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _execute(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[_Result]:
        """Run a batch in one transaction: one COMMIT (one fsync) for all of it.

        Other operations run first, in order; then every `send` of the batch is
        stored together with multi-row statements. Operations raise ServiceError
        only before they write, so a refused request needs no savepoint. Any
        other failure rolls the batch back and replays it one savepoint per
        operation, so only the culprit fails.
        """
        results: list[_Result] = []
        sends: list[tuple[SendOp, asyncio.Future[Any]]] = []
        acks: list[tuple[AckOp, asyncio.Future[Any]]] = []
        ids = self._envelope_ids(conn)
        first_id = ids.next if ids else 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, fut in batch:
                if isinstance(op, SendOp):
                    sends.append((op, fut))
                    continue
                if isinstance(op, AckOp):
                    acks.append((op, fut))
                    continue
                try:
                    results.append((fut, op(conn), None))
                except ServiceError as exc:
                    results.append((fut, None, exc))
            if acks:
                counts = delete_acked(conn, [op for op, _ in acks])
                results.extend((fut, n, None) for (_, fut), n in zip(acks, counts, strict=True))
            if sends:
                assert ids is not None
                outcomes = store_sends(conn, [op for op, _ in sends], self._resolver(conn), ids)
                results.extend(
                    _outcome(fut, o) for (_, fut), o in zip(sends, outcomes, strict=True)
                )
            if ids is not None:
                ids.save(conn)  # group messages take ids outside store_sends too
            conn.execute("COMMIT")
        except _OP_ERRORS as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._devices.clear()  # it may have read what was rolled back
            self._group_devices.clear()
            if ids is not None:
                ids.rollback(first_id)
            if len(batch) == 1:
                log.error("database operation failed: %s", exc)
                return [(batch[0][1], None, StorageError(str(exc)))]
            return self._execute_each(conn, batch)
        self.batches += 1
        self.operations += len(batch)
        return results

    def _envelope_ids(self, conn: sqlite3.Connection) -> EnvelopeIds | None:
        if self._ids is None and self._migrated:
            self._ids = EnvelopeIds(conn)
        return self._ids

    def _execute_each(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[_Result]:
        """The slow path: a savepoint around every operation of the batch."""
        results: list[_Result] = []
        ids = self._envelope_ids(conn)
        first_id = ids.next if ids else 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, fut in batch:
                conn.execute("SAVEPOINT op")
                try:
                    if isinstance(op, SendOp):
                        assert ids is not None
                        value: Any = store_sends(conn, [op], self._resolver(conn), ids)[0]
                        if isinstance(value, ServiceError):
                            raise value
                    elif isinstance(op, AckOp):
                        value = delete_acked(conn, [op])[0]
                    else:
                        value = op(conn)
                except ServiceError as exc:
                    conn.execute("ROLLBACK TO op")
                    results.append((fut, None, exc))
                except _OP_ERRORS as exc:
                    conn.execute("ROLLBACK TO op")
                    log.error("database operation failed: %s", exc)
                    results.append((fut, None, StorageError(str(exc))))
                else:
                    results.append((fut, value, None))
                conn.execute("RELEASE op")
            if ids is not None:
                ids.save(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            log.error("database transaction failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._devices.clear()
            self._group_devices.clear()
            if ids is not None:
                ids.rollback(first_id)
            err = StorageError(f"database unavailable: {exc}")
            return [(fut, None, err) for _, fut in batch]
        self.batches += 1
        self.operations += len(batch)
        return results

    def _resolver(self, conn: sqlite3.Connection) -> Callable[[str], dict[int, int]]:
        return lambda number: self._device_pks(conn, number)

    @property
    def healthy(self) -> bool:
        """Whether the database thread is running."""
        return self._thread is not None and self._thread.is_alive()

    async def _call(self, op: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._enqueue(op)
        return result

    def _enqueue(self, op: Op | SendOp | AckOp) -> asyncio.Future[Any]:
        """Queue an operation for the writer thread; the future settles after COMMIT."""
        if self._thread is None or self._loop is None or not self._thread.is_alive():
            raise StorageError("store is not running")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((op, fut))
        return fut

    async def _query(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, write: bool = True
    ) -> T:
        """Run a shared operation (storage/queries.py) on the writer thread."""
        return await self._call(
            lambda c: queries.run_sync(
                fn(SqliteTx(c, self._envelope_ids(c), self._group_devices), *args)
            )
        )

    async def register(
        self,
        number: str,
        account_key: str,
        device: DeviceKeys,
        one_time_keys: list[SignedKey],
        fallback_key: SignedKey | None,
        now_ms: int,
    ) -> Registration:
        """Create or replace the account of a number with one new primary device."""

        def op(c: sqlite3.Connection) -> Registration:
            reg = queries.run_sync(
                queries.register(
                    SqliteTx(c), number, account_key, device, one_time_keys, fallback_key, now_ms
                )
            )
            self._devices.pop(number, None)
            self._group_devices.clear()  # its groups' device lists changed
            return reg

        return await self._call(op)

    async def resolve_targets(
        self, sender: Sender, envelopes: list[OutEnvelope]
    ) -> tuple[Delivery, ...]:
        """Check recipients of an ephemeral message without storing it (eid 0)."""

        def op(c: sqlite3.Connection) -> tuple[Delivery, ...]:
            found = resolve(sender, envelopes, lambda number: self._device_pks(c, number))
            return tuple(Delivery(pk, 0, env) for pk, env in found)

        return await self._call(op)

    def _device_pks(self, c: sqlite3.Connection, number: str) -> dict[int, int]:
        """device_id -> pk of an account, cached on the worker thread until it changes."""
        cached = self._devices.get(number)
        if cached is None:
            found = queries.run_sync(queries.device_pks(SqliteTx(c), [number]))
            if len(self._devices) >= DEVICE_CACHE_SIZE:
                self._devices.clear()
            cached = self._devices[number] = found.get(number, {})
        return cached


# --- helpers run on the worker thread ---------------------------------------------------


def _take_acks(acks: deque[_Item], budget: int | None) -> list[_Item]:
    """Acks from the front of the deque up to `budget` acked envelopes (at least one ack)."""
    taken: list[_Item] = []
    count = 0
    while acks and (budget is None or not taken or count < budget):
        op = acks[0][0]
        assert isinstance(op, AckOp)
        if budget is not None and taken and count + len(op.eids) > budget:
            break
        taken.append(acks.popleft())
        count += len(op.eids)
    return taken


def _outcome(fut: asyncio.Future[Any], outcome: StoredMessage | ServiceError) -> _Result:
    if isinstance(outcome, ServiceError):
        return (fut, None, outcome)
    return (fut, outcome, None)


def _settle(results: list[_Result]) -> None:
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


def _settle_one(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
