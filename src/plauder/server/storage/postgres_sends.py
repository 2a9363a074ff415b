"""PostgreSQL's side of group commits: one statement stores all sends and acks of a batch."""

import functools
from typing import TYPE_CHECKING, Any

import asyncpg
import asyncpg.pool

from plauder.server.errors import StorageError
from plauder.server.storage import queries
from plauder.server.storage.batch import AckOp, Outcome, SendOp, SendPlan, numbers_of

if TYPE_CHECKING:
    Connection = asyncpg.pool.PoolConnectionProxy[Any]
else:
    Connection = asyncpg.pool.PoolConnectionProxy

# The statements take whole arrays, so one prepared statement serves every batch size.
# Each account's devices are read through a subquery of their own (OFFSET 0 keeps it
# one), so that they come from the devices index whatever the planner thinks of a join.
DEVICES = (
    "SELECT a.number, d.device_id, d.pk FROM accounts a CROSS JOIN LATERAL "
    "(SELECT device_id, pk FROM devices WHERE account_id = a.id OFFSET 0) d "
    "WHERE a.number = ANY($1::text[])"
)
# A batch in one statement, so in one round trip and one commit (autocommit): delete
# the acked envelopes a device owns, record the cmids (a repeated one is skipped), and
# insert the envelopes of the sends whose cmid was new, with ids handed out in batch
# order. The sends were checked against device lists read earlier, ($14, $15) as
# (number, device pk) pairs: if those lists changed since, the statement changes
# nothing and says `stale`. Rows come back as (kind, a, b, cmid): 0 = acked (id,
# device_pk), 1 = new cmid (device_pk, 0, cmid), 2 = stored envelope (position in
# $6.., id), 3 = stale.
WRITE = """
WITH known AS (
    SELECT * FROM unnest($14::text[], $15::bigint[]) AS k(number, pk)
), current AS (
    SELECT a.number, d.pk FROM accounts a
    CROSS JOIN LATERAL (SELECT pk FROM devices WHERE account_id = a.id OFFSET 0) d
    WHERE a.number = ANY($14::text[])
), stale AS (
    SELECT 1 FROM (
        (SELECT number, pk FROM current EXCEPT SELECT number, pk FROM known)
        UNION ALL
        (SELECT number, pk FROM known EXCEPT SELECT number, pk FROM current)
    ) changed LIMIT 1
), acked AS (
    DELETE FROM envelopes
    WHERE id = ANY($1::bigint[])
      AND (id, device_pk) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))
      AND NOT EXISTS (SELECT FROM stale)
    RETURNING id, device_pk
), cmids AS (
    INSERT INTO sent_messages (device_pk, cmid, ts)
    SELECT * FROM unnest($3::bigint[], $4::bytea[], $5::bigint[])
    WHERE NOT EXISTS (SELECT FROM stale)
    ON CONFLICT DO NOTHING
    RETURNING device_pk, cmid
), fresh AS (
    SELECT nextval(pg_get_serial_sequence('envelopes', 'id')) AS id, r.*
    FROM (
        SELECT r.* FROM unnest(
            $6::bigint[], $7::bytea[], $8::bigint[], $9::text[], $10::int[], $11::int[],
            $12::bytea[], $13::bigint[]
        ) WITH ORDINALITY AS r(from_pk, cmid, device_pk, sender, sender_device, type, body,
                               ts, n)
        JOIN cmids c ON c.device_pk = r.from_pk AND c.cmid = r.cmid
        ORDER BY r.n
    ) r
), stored AS (
    INSERT INTO envelopes (id, device_pk, sender, sender_device, type, body, ts)
    SELECT id, device_pk, sender, sender_device, type, body, ts FROM fresh
)
SELECT 0, id, device_pk, NULL::bytea FROM acked
UNION ALL SELECT 1, device_pk, 0, cmid FROM cmids
UNION ALL SELECT 2, n, id, NULL FROM fresh
UNION ALL SELECT 3, 0, 0, NULL FROM stale
"""
INSERT_REFS = """
INSERT INTO envelopes (id, device_pk, sender, sender_device, type, body, ts, message_id)
SELECT nextval(pg_get_serial_sequence('envelopes', 'id')), pk, '', 0, $2, ''::bytea, $3, $4
FROM unnest($1::bigint[]) WITH ORDINALITY AS u(pk, n) ORDER BY n
RETURNING id, device_pk
"""
ATTEMPTS = 3  # device lists that change between reading and writing, again and again


class DeviceCache:
    """Recipients' device lists as last read (number -> device id -> pk).

    Only a hint: every write checks the lists it relied on, and a send refused
    on their account is checked again with fresh ones.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._lists: dict[str, dict[int, int]] = {}
        self._limit = limit

    def __contains__(self, number: str) -> bool:
        return number in self._lists

    def get(self, number: str) -> dict[int, int]:
        """The account's devices as last read ({} if unknown)."""
        return self._lists.get(number, {})

    async def read(self, con: Connection, numbers: list[str]) -> None:
        """Read these accounts' devices; unknown accounts are not kept."""
        found: dict[str, dict[int, int]] = {}
        for number, device_id, pk in await con.fetch(DEVICES, numbers):
            found.setdefault(number, {})[device_id] = pk
        if len(self._lists) + len(found) > self._limit:
            self._lists.clear()
        for number in numbers:
            self._lists.pop(number, None)
        self._lists.update(found)


@functools.cache
def numbered(sql: str) -> str:
    """`?` parameters rewritten as PostgreSQL's `$1`, `$2`, ..."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))


class PgTx:
    """A `queries.Tx` over an asyncpg connection; `?` parameters become `$n`."""

    __slots__ = ("con",)
    cache: dict[Any, Any] | None = None  # several nodes write: nothing read is kept
    share_lock = " FOR SHARE"
    update_lock = " FOR UPDATE"

    def __init__(self, con: Any) -> None:
        self.con = con

    async def insert_refs(self, pks: list[int], kind: int, ts: int, message_id: int) -> list[int]:
        """Queue a group message for these devices in one statement; their eids."""
        if not pks:
            return []
        rows = await self.con.fetch(INSERT_REFS, pks, kind, ts, message_id)
        eid_of = {int(r[1]): int(r[0]) for r in rows}
        return [eid_of[pk] for pk in pks]

    @staticmethod
    def sql(text: str) -> str:
        """The statement with numbered parameters."""
        return numbered(text)

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows it changed."""
        status: str = await self.con.execute(self.sql(sql), *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetchone(self, sql: str, *args: Any) -> Any:
        """The first row of a query, or None."""
        return await self.con.fetchrow(self.sql(sql), *args)

    async def fetchall(self, sql: str, *args: Any) -> list[Any]:
        """All rows of a query."""
        rows: list[Any] = await self.con.fetch(self.sql(sql), *args)
        return rows

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run a statement once per row of parameters."""
        await self.con.executemany(self.sql(sql), rows)


async def write_batch(
    con: Connection, devices: DeviceCache, acks: list[AckOp], sends: list[SendOp]
) -> tuple[list[int], list[Outcome]]:
    """Store a batch in one statement, outside any transaction (it commits by itself).

    Returns how many envelopes each ack deleted and each send's outcome.
    """
    first_ack: dict[tuple[int, int], int] = {}
    for i, ack in enumerate(acks):
        for eid in ack.eids:
            first_ack.setdefault((eid, ack.device_pk), i)
    numbers = numbers_of(sends)
    fresh = [n for n in numbers if n not in devices]
    if fresh:
        await devices.read(con, fresh)
    for _ in range(ATTEMPTS):
        plan = SendPlan(sends, devices.get)
        doubted = _refused_numbers(plan, sends, set(fresh))
        if doubted:  # refused on lists read earlier: read them again
            await devices.read(con, doubted)
            fresh += doubted
            plan = SendPlan(sends, devices.get)
        result = await con.fetch(WRITE, *_arguments(plan, sends, first_ack, devices))
        if not any(row[0] == 3 for row in result):
            return await _outcomes(con, plan, sends, len(acks), first_ack, result)
        fresh = numbers
        await devices.read(con, numbers)
    raise StorageError("device lists kept changing while storing: try again")


def _refused_numbers(plan: SendPlan, sends: list[SendOp], fresh: set[str]) -> list[str]:
    """Recipients of refused sends whose device lists were not read in this batch."""
    refused = (sends[i] for i, outcome in enumerate(plan.outcomes) if outcome is not None)
    return [n for n in numbers_of(refused) if n not in fresh]


def _arguments(
    plan: SendPlan,
    sends: list[SendOp],
    first_ack: dict[tuple[int, int], int],
    devices: DeviceCache,
) -> list[list[Any]]:
    """The parameters of WRITE: acks, dedup records, envelope rows, device lists used."""
    keys: dict[tuple[int, bytes], int] = {}  # the first send of each cmid in the batch
    rows: list[tuple[int, bytes, int, str, int, int, bytes, int]] = []
    for i, targets in plan.targets.items():
        op = sends[i]
        if keys.setdefault((op.sender.device_pk, op.cmid), i) != i:
            continue  # the same send twice in one batch: the second is a repeat
        s = op.sender
        rows.extend(
            (s.device_pk, op.cmid, pk, s.number, s.device_id, env.type, env.body, op.now_ms)
            for pk, env in targets
        )
    records = [(pk, cmid, sends[i].now_ms) for (pk, cmid), i in keys.items()]
    used = numbers_of(sends[i] for i in plan.targets)
    known = [(n, pk) for n in used for pk in devices.get(n).values()]
    return [
        *_columns(list(first_ack), 2),
        *_columns(records, 3),
        *_columns(rows, 8),
        *_columns(known, 2),
    ]


async def _outcomes(
    con: Connection,
    plan: SendPlan,
    sends: list[SendOp],
    ack_count: int,
    first_ack: dict[tuple[int, int], int],
    result: list[Any],
) -> tuple[list[int], list[Outcome]]:
    """Deleted envelopes per ack and each send's outcome, from WRITE's rows."""
    counts = [0] * ack_count
    inserted: list[tuple[int, bytes]] = []
    ids: list[tuple[int, int]] = []
    for kind, a, b, cmid in result:
        if kind == 0:
            counts[first_ack[(a, b)]] += 1
        elif kind == 1:
            inserted.append((a, bytes(cmid)))
        else:
            ids.append((a, b))
    ids.sort()
    _, repeated = plan.rows(inserted, lambda n: [eid for _, eid in ids[:n]])
    if repeated:
        tx = PgTx(con)
        for i in repeated:
            op = sends[i]
            plan.repeated(i, *await queries.repeat_of(tx, op.sender, op.cmid))
    return counts, plan.results()


def _columns(rows: list[Any], width: int) -> list[list[Any]]:
    """Rows as one list per column, the shape unnest() takes."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]
