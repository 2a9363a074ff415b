"""PostgreSQL's side of group commits: array statements for all sends and acks of a batch."""

import functools
from typing import TYPE_CHECKING, Any

import asyncpg
import asyncpg.pool

from plauder.server.storage import queries
from plauder.server.storage.batch import (
    AckOp,
    AckPlan,
    EnvelopeRow,
    Outcome,
    SendOp,
    SendPlan,
    numbers_of,
)

if TYPE_CHECKING:
    Connection = asyncpg.pool.PoolConnectionProxy[Any]
else:
    Connection = asyncpg.pool.PoolConnectionProxy

# The statements take whole arrays, so one prepared statement serves every batch size.
DEVICES = (
    "SELECT a.number, d.device_id, d.pk FROM accounts a JOIN devices d "
    "ON d.account_id = a.id WHERE a.number = ANY($1::text[])"
)
RECORD_CMIDS = (
    "INSERT INTO sent_messages (device_pk, cmid, ts) "
    "SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[]) "
    "ON CONFLICT DO NOTHING RETURNING device_pk, cmid"
)
TAKE_IDS = "SELECT nextval(pg_get_serial_sequence('envelopes', 'id')) FROM generate_series(1, $1)"
INSERT_ENVELOPES = (
    "INSERT INTO envelopes (id, device_pk, sender, sender_device, type, body, ts) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[], $5::int[], "
    "$6::bytea[], $7::bigint[])"
)
DELETE_ACKED = "DELETE FROM envelopes WHERE id = ANY($1::bigint[]) RETURNING id, device_pk"


@functools.cache
def numbered(sql: str) -> str:
    """`?` parameters rewritten as PostgreSQL's `$1`, `$2`, ..."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))


class PgTx:
    """A `queries.Tx` over an asyncpg connection; `?` parameters become `$n`."""

    __slots__ = ("con",)

    def __init__(self, con: Any) -> None:
        self.con = con

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


async def store_sends(con: Connection, ops: list[SendOp]) -> list[Outcome]:
    """Check and store many sends in the open transaction; refused ones become errors."""
    pks: dict[str, dict[int, int]] = {}
    for number, device_id, pk in await con.fetch(DEVICES, numbers_of(ops)):
        pks.setdefault(number, {})[device_id] = pk
    plan = SendPlan(ops, lambda number: pks.get(number, {}))
    keys = plan.cmid_keys()
    inserted = (
        [(int(r[0]), bytes(r[1])) for r in await con.fetch(RECORD_CMIDS, *_columns(keys, 3))]
        if keys
        else []
    )
    most = sum(len(t) for t in plan.targets.values())
    pool = [int(r[0]) for r in await con.fetch(TAKE_IDS, most)] if most else []
    rows, repeated = plan.rows(inserted, lambda n: pool[:n])
    tx = PgTx(con)
    for i in repeated:
        op = ops[i]
        plan.repeated(i, await queries.first_ts(tx, op.sender.device_pk, op.cmid))
    if rows:
        await con.execute(INSERT_ENVELOPES, *_columns(rows, 7))
    return plan.results()


async def delete_acked(con: Connection, ops: list[AckOp]) -> list[int]:
    """Delete every acked envelope of a batch at once; returns how many each op deleted."""
    plan = AckPlan(ops)
    savepoint = con.transaction()
    await savepoint.start()
    deleted = [(int(r[0]), int(r[1])) for r in await con.fetch(DELETE_ACKED, list(plan.owner))]
    counts, foreign = plan.count(deleted)
    if not foreign:
        await savepoint.commit()
        return counts
    await savepoint.rollback()
    tx = PgTx(con)
    return [await queries.delete_own(tx, op.device_pk, op.eids) for op in ops]


def _columns(rows: list[EnvelopeRow] | list[tuple[int, bytes, int]], width: int) -> list[list[Any]]:
    """Rows as one list per column, the shape unnest() takes."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]
