"""Every store operation but the batched hot path, written once for SQLite and PostgreSQL.

Operations are coroutines over a `Tx`. On PostgreSQL they await the network;
on SQLite the Tx never suspends, so the writer thread runs them to completion
with `run_sync` and no event loop. SQL uses `?` parameters and the syntax
both engines share (RETURNING, ON CONFLICT ... DO, excluded.*).
"""

from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import DeviceKeys, OutEnvelope, SignedKey
from plauder.protocol.limits import MAX_STORED_ONE_TIME_KEYS
from plauder.server.errors import ServiceError
from plauder.server.storage.base import (
    AuthDevice,
    CodeCheck,
    Delivery,
    DeviceRow,
    PresenceInfo,
    QueuedEnvelope,
    Registration,
    Sender,
)
from plauder.server.storage.schema import MIGRATIONS, statements

T = TypeVar("T")
Row = Sequence[Any]
DeviceList = tuple[str, list[tuple[DeviceRow, SignedKey | None]], list[tuple[int, int]]]
CLAIM_TRIES = 3
SWEEP_GRACE_MS = 60_000


class Tx(Protocol):
    """A transaction as the operations see it."""

    share_lock: str  # " FOR SHARE" where the engine locks rows read, else ""
    update_lock: str  # " FOR UPDATE" likewise
    cache: dict[Any, Any] | None  # kept across operations by a single writer, else None

    async def insert_refs(self, pks: list[int], kind: int, ts: int, message_id: int) -> list[int]:
        """Queue a stored group message for these devices in one statement; their eids."""
        ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows it changed."""
        ...

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        """The first row of a query, or None."""
        ...

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        """All rows of a query."""
        ...

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run a statement once per row of parameters."""
        ...


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (an operation over a SQLite Tx)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a synchronous store operation suspended")


async def migrate(tx: Tx, types: dict[str, str]) -> int:
    """Apply missing migrations in order; returns the schema version now."""
    await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = await tx.fetchone("SELECT max(version) FROM schema_version")
    current = int(row[0] or 0) if row else 0
    for version in range(current + 1, len(MIGRATIONS) + 1):
        for stmt in statements(version, types):
            await tx.execute(stmt)
        await tx.execute("INSERT INTO schema_version (version) VALUES (?)", version)
    return max(current, len(MIGRATIONS))


async def claim_setting(tx: Tx, name: str, value: str) -> str:
    """Store a cluster setting unless it is set; returns the value in force."""
    await tx.execute(
        "INSERT INTO cluster_settings (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
        name,
        value,
    )
    row = await tx.fetchone("SELECT value FROM cluster_settings WHERE name = ?", name)
    assert row is not None
    return str(row[0])


# --- accounts and codes ------------------------------------------------------------------


async def save_code(tx: Tx, number: str, code_hash: bytes, expires_ms: int) -> None:
    """Store a new verification code for a number, replacing an older one."""
    await tx.execute(
        "INSERT INTO verification_codes (number, code_hash, expires, attempts) "
        "VALUES (?, ?, ?, 0) ON CONFLICT (number) DO UPDATE SET "
        "code_hash = excluded.code_hash, expires = excluded.expires, attempts = 0",
        number,
        code_hash,
        expires_ms,
    )


async def check_code(
    tx: Tx, number: str, code_hash: bytes, now_ms: int, max_attempts: int
) -> CodeCheck:
    """Count an attempt and compare the code; a correct code is consumed.

    The attempt is counted by an UPDATE first, so concurrent checks of one
    number (on several nodes) queue on its row; the DELETE decides which of
    two correct checks wins.
    """
    row = await tx.fetchone(
        "UPDATE verification_codes SET attempts = attempts + 1 WHERE number = ? "
        "RETURNING code_hash, expires, attempts",
        number,
    )
    if row is None:
        return CodeCheck.NO_CODE
    stored, expires, attempts = bytes(row[0]), int(row[1]), int(row[2])
    if attempts > max_attempts:
        return CodeCheck.TOO_MANY_ATTEMPTS
    if expires <= now_ms:
        await tx.execute("DELETE FROM verification_codes WHERE number = ?", number)
        return CodeCheck.EXPIRED
    if stored != code_hash:
        return CodeCheck.TOO_MANY_ATTEMPTS if attempts >= max_attempts else CodeCheck.WRONG
    won = await tx.execute(
        "DELETE FROM verification_codes WHERE number = ? AND code_hash = ?", number, code_hash
    )
    return CodeCheck.OK if won else CodeCheck.NO_CODE


async def register(
    tx: Tx,
    number: str,
    account_key: str,
    device: DeviceKeys,
    one_time_keys: list[SignedKey],
    fallback_key: SignedKey | None,
    now_ms: int,
) -> Registration:
    """Create or replace the account of a number with one new primary device."""
    row = await tx.fetchone(
        "INSERT INTO accounts (number, account_key, created) VALUES (?, ?, ?) "
        "ON CONFLICT (number) DO UPDATE SET account_key = excluded.account_key RETURNING id",
        number,
        account_key,
        now_ms,
    )
    assert row is not None
    account_id = int(row[0])
    old = await tx.fetchall("SELECT pk FROM devices WHERE account_id = ?", account_id)
    removed = tuple(int(r[0]) for r in old)
    if removed:
        await tx.executemany("DELETE FROM envelopes WHERE device_pk = ?", [(pk,) for pk in removed])
        await tx.execute("DELETE FROM devices WHERE account_id = ?", account_id)
    # device ids are never reused, so contacts notice the change of devices
    row = await tx.fetchone(
        "UPDATE accounts SET next_device_id = next_device_id + 1 WHERE id = ? "
        "RETURNING next_device_id - 1",
        account_id,
    )
    assert row is not None
    device_id = int(row[0])
    row = await tx.fetchone(
        "INSERT INTO devices (account_id, device_id, identity_key, signing_key, "
        "signature, created) VALUES (?, ?, ?, ?, ?, ?) RETURNING pk",
        account_id,
        device_id,
        device.identity_key,
        device.signing_key,
        device.signature,
        now_ms,
    )
    assert row is not None
    device_pk = int(row[0])
    await _insert_keys(tx, device_pk, one_time_keys, fallback_key)
    return Registration(account_id, device_pk, device_id, removed)


async def auth_device(tx: Tx, number: str, device_id: int) -> AuthDevice | None:
    """Look up a device for authentication."""
    row = await tx.fetchone(
        "SELECT a.id, d.pk, d.signing_key FROM accounts a JOIN devices d "
        "ON d.account_id = a.id WHERE a.number = ? AND d.device_id = ?",
        number,
        device_id,
    )
    return None if row is None else AuthDevice(int(row[0]), int(row[1]), str(row[2]))


async def device_pks(tx: Tx, numbers: list[str]) -> dict[str, dict[int, int]]:
    """device_id -> pk of each account among these numbers (absent if unknown)."""
    out: dict[str, dict[int, int]] = {}
    for number in numbers:
        rows = await tx.fetchall(
            "SELECT d.device_id, d.pk FROM accounts a JOIN devices d "
            "ON d.account_id = a.id WHERE a.number = ?",
            number,
        )
        if rows:
            out[number] = {int(r[0]): int(r[1]) for r in rows}
    return out


# --- keys --------------------------------------------------------------------------------


async def devices(tx: Tx, number: str, claim: bool) -> DeviceList | None:
    """An account's key and devices; with claim, one pre-key each and the pools drawn from."""
    acc = await tx.fetchone("SELECT id, account_key FROM accounts WHERE number = ?", number)
    if acc is None:
        return None
    rows = await tx.fetchall(
        "SELECT pk, device_id, identity_key, signing_key, signature FROM devices "
        "WHERE account_id = ? ORDER BY device_id",
        acc[0],
    )
    out: list[tuple[DeviceRow, SignedKey | None]] = []
    drawn: list[tuple[int, int]] = []
    for pk, device_id, ik, sk, sig in rows:
        dev = DeviceRow(
            int(pk),
            DeviceKeys(device_id=int(device_id), identity_key=ik, signing_key=sk, signature=sig),
        )
        prekey = await claim_prekey(tx, int(pk)) if claim else None
        if claim:
            drawn.append((int(pk), await count_one_time_keys(tx, int(pk))))
        out.append((dev, prekey))
    return str(acc[1]), out, drawn


async def upload_keys(
    tx: Tx, device_pk: int, one_time_keys: list[SignedKey], fallback_key: SignedKey | None
) -> int:
    """Add one-time keys (and replace the fallback key); returns the new count."""
    if await count_one_time_keys(tx, device_pk) + len(one_time_keys) > MAX_STORED_ONE_TIME_KEYS:
        raise ServiceError(
            ErrorCode.TOO_MANY_KEYS,
            f"a device may keep at most {MAX_STORED_ONE_TIME_KEYS} one-time keys",
        )
    await _insert_keys(tx, device_pk, one_time_keys, fallback_key)
    return await count_one_time_keys(tx, device_pk)


async def count_one_time_keys(tx: Tx, device_pk: int) -> int:
    """How many unclaimed one-time keys a device has."""
    row = await tx.fetchone("SELECT count(*) FROM one_time_keys WHERE device_pk = ?", device_pk)
    return int(row[0]) if row else 0


async def _insert_keys(
    tx: Tx, device_pk: int, otks: list[SignedKey], fallback: SignedKey | None
) -> None:
    if otks:
        await tx.executemany(
            "INSERT INTO one_time_keys (device_pk, key_id, key, signature) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(device_pk, k.key_id, k.key, k.signature) for k in otks],
        )
    if fallback is not None:
        await tx.execute(
            "INSERT INTO fallback_keys (device_pk, key_id, key, signature) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (device_pk) DO UPDATE SET key_id = excluded.key_id, "
            "key = excluded.key, signature = excluded.signature",
            device_pk,
            fallback.key_id,
            fallback.key,
            fallback.signature,
        )


async def claim_prekey(tx: Tx, device_pk: int) -> SignedKey | None:
    """Take one of a device's one-time keys, or its fallback key when none is left."""
    # a concurrent claim (another node) may take the chosen key first: choose again
    for _ in range(CLAIM_TRIES):
        row = await tx.fetchone(
            "DELETE FROM one_time_keys WHERE device_pk = ? AND key_id = (SELECT key_id "
            "FROM one_time_keys WHERE device_pk = ? LIMIT 1) RETURNING key_id, key, signature",
            device_pk,
            device_pk,
        )
        if row is not None:
            return SignedKey(key_id=row[0], key=row[1], signature=row[2])
        if not await count_one_time_keys(tx, device_pk):
            break
    row = await tx.fetchone(
        "SELECT key_id, key, signature FROM fallback_keys WHERE device_pk = ?", device_pk
    )
    if row is None:
        return None
    return SignedKey(key_id=row[0], key=row[1], signature=row[2], fallback=True)


# --- messages ----------------------------------------------------------------------------


async def fetch_queued(tx: Tx, device_pk: int, after_eid: int, limit: int) -> list[QueuedEnvelope]:
    """Queued envelopes of a device after an envelope id, oldest first."""
    rows = await tx.fetchall(
        "SELECT e.id, e.sender, e.sender_device, e.type, e.body, e.ts, "
        "g.sender, g.sender_device, g.body, g.gid FROM envelopes e "
        "LEFT JOIN group_messages g ON g.id = e.message_id "
        "WHERE e.device_pk = ? AND e.id > ? ORDER BY e.id LIMIT ?",
        device_pk,
        after_eid,
        limit,
    )
    return [
        QueuedEnvelope(int(r[0]), str(r[1]), int(r[2]), int(r[3]), bytes(r[4]), int(r[5]))
        if r[9] is None
        else QueuedEnvelope(
            int(r[0]), str(r[6]), int(r[7]), int(r[3]), bytes(r[8]), int(r[5]), bytes(r[9])
        )
        for r in rows
    ]


async def first_ts(tx: Tx, device_pk: int, cmid: bytes) -> int | None:
    """When a message with this cmid was first stored, if it was."""
    row = await tx.fetchone(
        "SELECT ts FROM sent_messages WHERE device_pk = ? AND cmid = ?", device_pk, cmid
    )
    return int(row[0]) if row else None


async def repeat_of(tx: Tx, sender: Sender, cmid: bytes) -> tuple[int | None, tuple[Delivery, ...]]:
    """When a repeated send was first stored, and its envelopes still queued, in id order.

    A repeat is routed again with those: the node that stored the send first
    may have died between its commit and routing them. Another send of the
    device in the same millisecond comes along; offering a queued envelope
    again is harmless (a feed ignores one it pushed already).
    """
    rows = await tx.fetchall(
        "SELECT s.ts, e.id, e.device_pk, a.number, d.device_id, e.type, e.body "
        "FROM sent_messages s "
        "LEFT JOIN envelopes e ON e.ts = s.ts AND e.sender = ? AND e.sender_device = ? "
        "AND e.message_id IS NULL "
        "LEFT JOIN devices d ON d.pk = e.device_pk "
        "LEFT JOIN accounts a ON a.id = d.account_id "
        "WHERE s.device_pk = ? AND s.cmid = ? ORDER BY e.id",
        sender.number,
        sender.device_id,
        sender.device_pk,
        cmid,
    )
    if not rows:
        return None, ()
    queued = tuple(
        Delivery(
            int(r[2]),
            int(r[1]),
            OutEnvelope(to=str(r[3]), device_id=int(r[4]), type=int(r[5]), body=bytes(r[6])),
        )
        for r in rows
        if r[1] is not None and r[3] is not None
    )
    return int(rows[0][0]), queued


async def delete_own(tx: Tx, device_pk: int, eids: list[int]) -> int:
    """Delete those of the envelopes that belong to the device; returns how many."""
    deleted = 0
    for eid in sorted(set(eids)):
        deleted += await tx.execute(
            "DELETE FROM envelopes WHERE device_pk = ? AND id = ?", device_pk, eid
        )
    return deleted


async def sweep(tx: Tx, now_ms: int, envelope_ttl_ms: int, dedup_ttl_ms: int) -> int:
    """Delete expired envelopes, dedup records and codes; returns envelopes deleted."""
    n = await tx.execute("DELETE FROM envelopes WHERE ts < ?", now_ms - envelope_ttl_ms)
    await tx.execute("DELETE FROM sent_messages WHERE ts < ?", now_ms - dedup_ttl_ms)
    await tx.execute("DELETE FROM verification_codes WHERE expires < ?", now_ms)
    # a group message goes once no envelope refers to it (those share its ts, and its index)
    await tx.execute(
        "DELETE FROM group_messages WHERE ts < ? AND NOT EXISTS (SELECT 1 FROM envelopes e "
        "WHERE e.ts = group_messages.ts AND e.message_id = group_messages.id)",
        now_ms - SWEEP_GRACE_MS,
    )
    return n


# --- presence ----------------------------------------------------------------------------


async def presence_info(tx: Tx, numbers: list[str]) -> list[PresenceInfo]:
    """Presence settings and last seen of the known numbers among these."""
    out = []
    for number in numbers:
        row = await tx.fetchone(
            "SELECT id, last_seen_visible, last_seen FROM accounts WHERE number = ?", number
        )
        if row is not None:
            last_seen = None if row[2] is None else int(row[2])
            out.append(PresenceInfo(int(row[0]), number, bool(row[1]), last_seen))
    return out


async def set_last_seen(tx: Tx, account_id: int, ts: int) -> None:
    """Record when an account was last online."""
    await tx.execute("UPDATE accounts SET last_seen = ? WHERE id = ?", ts, account_id)


async def set_last_seen_visible(tx: Tx, account_id: int, visible: bool) -> None:
    """Set whether others may see the account's presence."""
    await tx.execute("UPDATE accounts SET last_seen_visible = ? WHERE id = ?", visible, account_id)
