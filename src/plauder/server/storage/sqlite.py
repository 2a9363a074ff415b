"""The SQLite backend: one connection on one thread, writes batched into group commits."""

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import DeviceKeys, OutEnvelope, SignedKey
from plauder.protocol.limits import MAX_STORED_ONE_TIME_KEYS
from plauder.server.errors import ServiceError, StorageError
from plauder.server.storage.base import (
    AuthDevice,
    CodeCheck,
    Delivery,
    DeviceRow,
    PresenceInfo,
    QueuedEnvelope,
    Registration,
    Sender,
    StoredMessage,
)
from plauder.server.storage.schema import MIGRATIONS, SQLITE_TYPES, statements
from plauder.server.storage.sqlite_sends import (
    AckOp,
    EnvelopeIds,
    SendOp,
    delete_acked,
    store_sends,
)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
_Item = tuple[Op | SendOp | AckOp, asyncio.Future[Any]]
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]
_OP_ERRORS = (sqlite3.Error, ValueError, OverflowError, TypeError)

log = logging.getLogger(__name__)

MAX_BATCH = 1024
CHECKPOINT_SECONDS = 0.5
BACKSTOP_CHECKPOINT_PAGES = 20_000  # about 80 MB of WAL before the writer checkpoints itself
DEVICE_CACHE_SIZE = 100_000


class SqliteStore:
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
        self._devices: dict[str, dict[int, int]] = {}  # worker thread only
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
        await self._call(_migrate)
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
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                batch = [item]
                stop = False
                waited = False
                while len(batch) < MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        if waited or self._gather <= 0:
                            break
                        # a lone write would pay a whole fsync: give its neighbours
                        # a moment to join the same commit
                        waited = True
                        time.sleep(self._gather)
                        continue
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                results = self._execute(conn, batch)
                loop.call_soon_threadsafe(_settle, results)
                if stop:
                    break
        finally:
            conn.close()

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
                outcomes = store_sends(conn, [op for op, _ in sends], self._resolve, ids)
                results.extend(
                    _outcome(fut, o) for (_, fut), o in zip(sends, outcomes, strict=True)
                )
            conn.execute("COMMIT")
        except _OP_ERRORS as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._devices.clear()  # it may have read what was rolled back
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
                        value: Any = store_sends(conn, [op], self._resolve, ids)[0]
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
            conn.execute("COMMIT")
        except Exception as exc:
            log.error("database transaction failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._devices.clear()
            if ids is not None:
                ids.rollback(first_id)
            err = StorageError(f"database unavailable: {exc}")
            return [(fut, None, err) for _, fut in batch]
        self.batches += 1
        self.operations += len(batch)
        return results

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

    # --- accounts and codes ------------------------------------------------------------

    async def save_code(self, number: str, code_hash: bytes, expires_ms: int) -> None:
        """Store a new verification code for a number, replacing an older one."""

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO verification_codes (number, code_hash, expires, attempts) "
                "VALUES (?, ?, ?, 0) ON CONFLICT (number) DO UPDATE SET "
                "code_hash = excluded.code_hash, expires = excluded.expires, attempts = 0",
                (number, code_hash, expires_ms),
            )

        await self._call(op)

    async def check_code(
        self, number: str, code_hash: bytes, now_ms: int, max_attempts: int
    ) -> CodeCheck:
        """Count an attempt and compare the code; a correct code is consumed."""

        def op(c: sqlite3.Connection) -> CodeCheck:
            row = c.execute(
                "SELECT code_hash, expires, attempts FROM verification_codes WHERE number = ?",
                (number,),
            ).fetchone()
            if row is None:
                return CodeCheck.NO_CODE
            stored, expires, attempts = row
            if attempts >= max_attempts:
                return CodeCheck.TOO_MANY_ATTEMPTS
            if expires <= now_ms:
                c.execute("DELETE FROM verification_codes WHERE number = ?", (number,))
                return CodeCheck.EXPIRED
            if stored != code_hash:
                c.execute(
                    "UPDATE verification_codes SET attempts = attempts + 1 WHERE number = ?",
                    (number,),
                )
                return (
                    CodeCheck.TOO_MANY_ATTEMPTS if attempts + 1 >= max_attempts else CodeCheck.WRONG
                )
            c.execute("DELETE FROM verification_codes WHERE number = ?", (number,))
            return CodeCheck.OK

        return await self._call(op)

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
            row = c.execute("SELECT id FROM accounts WHERE number = ?", (number,)).fetchone()
            removed: tuple[int, ...] = ()
            if row is None:
                account_id = c.execute(
                    "INSERT INTO accounts (number, account_key, created) VALUES (?, ?, ?) "
                    "RETURNING id",
                    (number, account_key, now_ms),
                ).fetchone()[0]
            else:
                account_id = row[0]
                old = c.execute(
                    "SELECT pk FROM devices WHERE account_id = ?", (account_id,)
                ).fetchall()
                removed = tuple(r[0] for r in old)
                c.executemany("DELETE FROM envelopes WHERE device_pk = ?", old)
                c.execute("DELETE FROM devices WHERE account_id = ?", (account_id,))
                c.execute(
                    "UPDATE accounts SET account_key = ? WHERE id = ?", (account_key, account_id)
                )
            # device ids are never reused, so contacts notice the change of devices
            device_id = c.execute(
                "UPDATE accounts SET next_device_id = next_device_id + 1 WHERE id = ? "
                "RETURNING next_device_id - 1",
                (account_id,),
            ).fetchone()[0]
            device_pk = c.execute(
                "INSERT INTO devices (account_id, device_id, identity_key, signing_key, "
                "signature, created) VALUES (?, ?, ?, ?, ?, ?) RETURNING pk",
                (
                    account_id,
                    device_id,
                    device.identity_key,
                    device.signing_key,
                    device.signature,
                    now_ms,
                ),
            ).fetchone()[0]
            _insert_keys(c, device_pk, one_time_keys, fallback_key)
            self._devices.pop(number, None)
            return Registration(account_id, device_pk, device_id, removed)

        return await self._call(op)

    async def auth_device(self, number: str, device_id: int) -> AuthDevice | None:
        """Look up a device for authentication."""

        def op(c: sqlite3.Connection) -> AuthDevice | None:
            row = c.execute(
                "SELECT a.id, d.pk, d.signing_key FROM accounts a JOIN devices d "
                "ON d.account_id = a.id WHERE a.number = ? AND d.device_id = ?",
                (number, device_id),
            ).fetchone()
            return None if row is None else AuthDevice(row[0], row[1], row[2])

        return await self._call(op)

    # --- keys --------------------------------------------------------------------------

    async def devices(
        self, number: str, claim: bool
    ) -> tuple[str, list[tuple[DeviceRow, SignedKey | None]], list[tuple[int, int]]] | None:
        """An account's key and devices; with claim, one pre-key each."""

        def op(
            c: sqlite3.Connection,
        ) -> tuple[str, list[tuple[DeviceRow, SignedKey | None]], list[tuple[int, int]]] | None:
            acc = c.execute(
                "SELECT id, account_key FROM accounts WHERE number = ?", (number,)
            ).fetchone()
            if acc is None:
                return None
            rows = c.execute(
                "SELECT pk, device_id, identity_key, signing_key, signature FROM devices "
                "WHERE account_id = ? ORDER BY device_id",
                (acc[0],),
            ).fetchall()
            out: list[tuple[DeviceRow, SignedKey | None]] = []
            drawn: list[tuple[int, int]] = []
            for pk, device_id, ik, sk, sig in rows:
                dev = DeviceRow(
                    pk,
                    DeviceKeys(device_id=device_id, identity_key=ik, signing_key=sk, signature=sig),
                )
                prekey = _claim_prekey(c, pk) if claim else None
                if claim:
                    drawn.append((pk, _count_otks(c, pk)))
                out.append((dev, prekey))
            return acc[1], out, drawn

        return await self._call(op)

    async def upload_keys(
        self, device_pk: int, one_time_keys: list[SignedKey], fallback_key: SignedKey | None
    ) -> int:
        """Add one-time keys (and replace the fallback key); returns the new count."""

        def op(c: sqlite3.Connection) -> int:
            if _count_otks(c, device_pk) + len(one_time_keys) > MAX_STORED_ONE_TIME_KEYS:
                raise ServiceError(
                    ErrorCode.TOO_MANY_KEYS,
                    f"a device may keep at most {MAX_STORED_ONE_TIME_KEYS} one-time keys",
                )
            _insert_keys(c, device_pk, one_time_keys, fallback_key)
            return _count_otks(c, device_pk)

        return await self._call(op)

    async def count_one_time_keys(self, device_pk: int) -> int:
        """How many unclaimed one-time keys a device has."""
        return await self._call(lambda c: _count_otks(c, device_pk))

    # --- messages ----------------------------------------------------------------------

    async def store_message(
        self, sender: Sender, cmid: bytes, envelopes: list[OutEnvelope], now_ms: int
    ) -> StoredMessage:
        """Check recipients and store all envelopes of one message atomically."""
        result: StoredMessage = await self._enqueue(SendOp(sender, cmid, envelopes, now_ms))
        return result

    async def resolve_targets(
        self, sender: Sender, envelopes: list[OutEnvelope]
    ) -> tuple[Delivery, ...]:
        """Check recipients of an ephemeral message without storing it (eid 0)."""

        def op(c: sqlite3.Connection) -> tuple[Delivery, ...]:
            return tuple(Delivery(pk, 0, env) for pk, env in self._resolve(c, sender, envelopes))

        return await self._call(op)

    async def fetch_queued(
        self, device_pk: int, after_eid: int, limit: int
    ) -> list[QueuedEnvelope]:
        """Queued envelopes of a device after an envelope id, oldest first."""

        def op(c: sqlite3.Connection) -> list[QueuedEnvelope]:
            rows = c.execute(
                "SELECT id, sender, sender_device, type, body, ts FROM envelopes "
                "WHERE device_pk = ? AND id > ? ORDER BY id LIMIT ?",
                (device_pk, after_eid, limit),
            ).fetchall()
            return [QueuedEnvelope(*r) for r in rows]

        return await self._call(op)

    async def ack(self, device_pk: int, eids: list[int]) -> int:
        """Delete a device's envelopes; returns how many of them existed."""
        deleted: int = await self._enqueue(AckOp(device_pk, list(eids)))
        return deleted

    async def sweep(self, now_ms: int, envelope_ttl_ms: int) -> int:
        """Delete expired envelopes, dedup records and codes; returns envelopes deleted."""

        def op(c: sqlite3.Connection) -> int:
            cutoff = now_ms - envelope_ttl_ms
            n = c.execute("DELETE FROM envelopes WHERE ts < ?", (cutoff,)).rowcount
            c.execute("DELETE FROM sent_messages WHERE ts < ?", (cutoff,))
            c.execute("DELETE FROM verification_codes WHERE expires < ?", (now_ms,))
            return int(n)

        return await self._call(op)

    def _resolve(
        self, c: sqlite3.Connection, sender: Sender, envelopes: list[OutEnvelope]
    ) -> list[tuple[int, OutEnvelope]]:
        """Map envelopes to device pks, insisting each account's devices are all covered."""
        by_number: dict[str, list[OutEnvelope]] = {}
        for env in envelopes:
            by_number.setdefault(env.to, []).append(env)
        out: list[tuple[int, OutEnvelope]] = []
        for number, envs in by_number.items():
            pks = dict(self._device_pks(c, number))
            if not pks:
                raise ServiceError(ErrorCode.UNKNOWN_ACCOUNT, "no such account")
            if number == sender.number:
                pks.pop(sender.device_id, None)
            given = [e.device_id for e in envs]
            if len(set(given)) != len(given) or set(given) != set(pks):
                raise ServiceError(
                    ErrorCode.MISMATCHED_DEVICES,
                    f"the device list of {number} has changed: fetch it again",
                )
            out.extend((pks[e.device_id], e) for e in envs)
        return out

    def _device_pks(self, c: sqlite3.Connection, number: str) -> dict[int, int]:
        """device_id -> pk of an account, cached on the worker thread until it changes."""
        cached = self._devices.get(number)
        if cached is None:
            rows = c.execute(
                "SELECT d.device_id, d.pk FROM accounts a JOIN devices d "
                "ON d.account_id = a.id WHERE a.number = ?",
                (number,),
            ).fetchall()
            if len(self._devices) >= DEVICE_CACHE_SIZE:
                self._devices.clear()
            cached = self._devices[number] = dict(rows)
        return cached

    # --- presence ----------------------------------------------------------------------

    async def presence_info(self, numbers: list[str]) -> list[PresenceInfo]:
        """Presence settings and last seen of the known numbers among these."""

        def op(c: sqlite3.Connection) -> list[PresenceInfo]:
            out = []
            for number in numbers:
                row = c.execute(
                    "SELECT id, last_seen_visible, last_seen FROM accounts WHERE number = ?",
                    (number,),
                ).fetchone()
                if row is not None:
                    out.append(PresenceInfo(row[0], number, bool(row[1]), row[2]))
            return out

        return await self._call(op)

    async def set_last_seen(self, account_id: int, ts: int) -> None:
        """Record when an account was last online."""
        await self._call(
            lambda c: c.execute("UPDATE accounts SET last_seen = ? WHERE id = ?", (ts, account_id))
        )

    async def set_last_seen_visible(self, account_id: int, visible: bool) -> None:
        """Set whether others may see the account's presence."""
        await self._call(
            lambda c: c.execute(
                "UPDATE accounts SET last_seen_visible = ? WHERE id = ?", (visible, account_id)
            )
        )


# --- helpers run on the worker thread -----------------------------------------------------


def _migrate(c: sqlite3.Connection) -> None:
    c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = c.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] or 0
    for version in range(current + 1, len(MIGRATIONS) + 1):
        for stmt in statements(version, SQLITE_TYPES):
            c.execute(stmt)
        c.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


def _insert_keys(
    c: sqlite3.Connection, device_pk: int, otks: list[SignedKey], fallback: SignedKey | None
) -> None:
    c.executemany(
        "INSERT INTO one_time_keys (device_pk, key_id, key, signature) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(device_pk, k.key_id, k.key, k.signature) for k in otks],
    )
    if fallback is not None:
        c.execute(
            "INSERT INTO fallback_keys (device_pk, key_id, key, signature) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (device_pk) DO UPDATE SET key_id = excluded.key_id, "
            "key = excluded.key, signature = excluded.signature",
            (device_pk, fallback.key_id, fallback.key, fallback.signature),
        )


def _count_otks(c: sqlite3.Connection, device_pk: int) -> int:
    return int(
        c.execute(
            "SELECT count(*) FROM one_time_keys WHERE device_pk = ?", (device_pk,)
        ).fetchone()[0]
    )


def _claim_prekey(c: sqlite3.Connection, device_pk: int) -> SignedKey | None:
    row = c.execute(
        "DELETE FROM one_time_keys WHERE rowid = (SELECT rowid FROM one_time_keys "
        "WHERE device_pk = ? LIMIT 1) RETURNING key_id, key, signature",
        (device_pk,),
    ).fetchone()
    if row is not None:
        return SignedKey(key_id=row[0], key=row[1], signature=row[2])
    row = c.execute(
        "SELECT key_id, key, signature FROM fallback_keys WHERE device_pk = ?", (device_pk,)
    ).fetchone()
    if row is None:
        return None
    return SignedKey(key_id=row[0], key=row[1], signature=row[2], fallback=True)


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
