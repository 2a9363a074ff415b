"""SQLite's side of group commits: multi-row statements for all sends and acks of a batch."""

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from plauder.server.storage import queries
from plauder.server.storage.batch import AckOp, AckPlan, Outcome, SendOp, SendPlan

T = TypeVar("T")

ROWS_PER_STATEMENT = 400
# one row per element of a JSON array of device pks; ids follow the array's order
INSERT_REFS = (
    "INSERT INTO envelopes (id, device_pk, sender, sender_device, type, body, ts, message_id) "
    "SELECT ?1 + key, value, '', 0, ?2, x'', ?3, ?4 FROM json_each(?5)"
)  # 7 values a row stays far below SQLite's 32766 variables


class SqliteTx:
    """A `queries.Tx` over a sqlite3 connection; its methods never suspend."""

    __slots__ = ("c", "cache", "ids")
    share_lock = update_lock = ""  # one writer: nothing to lock

    def __init__(
        self,
        c: sqlite3.Connection,
        ids: "EnvelopeIds | None" = None,
        cache: dict[Any, Any] | None = None,
    ) -> None:
        self.c = c
        self.ids = ids
        self.cache = cache

    async def insert_refs(self, pks: list[int], kind: int, ts: int, message_id: int) -> list[int]:
        """Queue a group message for these devices with ids in commit order, in one statement."""
        if self.ids is None:
            raise RuntimeError("no envelope ids before the schema is migrated")
        eids = self.ids.take(len(pks))
        if pks:
            self.c.execute(INSERT_REFS, (eids[0], kind, ts, message_id, json.dumps(pks)))
        return eids

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows it changed."""
        return int(self.c.execute(sql, args).rowcount)

    async def fetchone(self, sql: str, *args: Any) -> Any:
        """The first row of a query, or None."""
        return self.c.execute(sql, args).fetchone()

    async def fetchall(self, sql: str, *args: Any) -> list[Any]:
        """All rows of a query."""
        return self.c.execute(sql, args).fetchall()

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run a statement once per row of parameters."""
        self.c.executemany(sql, rows)


class EnvelopeIds:
    """Hands out envelope ids in commit order; persisted once per batch, never reused."""

    def __init__(self, c: sqlite3.Connection) -> None:
        row = c.execute("SELECT value FROM counters WHERE name = 'envelope_id'").fetchone()
        top = c.execute("SELECT max(id) FROM envelopes").fetchone()[0] or 0
        self.next = max(row[0] if row else 0, top) + 1
        self._saved = self.next

    def take(self, n: int) -> list[int]:
        """The next n ids."""
        first = self.next
        self.next += n
        return list(range(first, self.next))

    def save(self, c: sqlite3.Connection) -> None:
        """Record the high-water mark inside the batch's transaction."""
        if self.next != self._saved:
            c.execute(
                "INSERT INTO counters (name, value) VALUES ('envelope_id', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (self.next,),
            )

    def rollback(self, to: int) -> None:
        """Forget ids handed out in a transaction that was rolled back."""
        self.next = to


def store_sends(
    c: sqlite3.Connection,
    ops: list[SendOp],
    devices: Callable[[str], dict[int, int]],
    ids: EnvelopeIds,
) -> list[Outcome]:
    """Check and store many sends; a refused one is an error, the rest are stored."""
    plan = SendPlan(ops, devices)
    inserted: list[tuple[int, bytes]] = []
    for chunk in _chunks(plan.cmid_keys()):
        inserted.extend(
            (r[0], bytes(r[1]))
            for r in c.execute(
                "INSERT INTO sent_messages (device_pk, cmid, ts) VALUES "
                + ",".join(["(?, ?, ?)"] * len(chunk))
                + " ON CONFLICT DO NOTHING RETURNING device_pk, cmid",
                [v for key in chunk for v in key],
            )
        )
    rows, repeated = plan.rows(inserted, ids.take)
    tx = SqliteTx(c)
    for i in repeated:
        op = ops[i]
        plan.repeated(i, *queries.run_sync(queries.repeat_of(tx, op.sender, op.cmid)))
    for rows_chunk in _chunks(rows):
        c.execute(
            "INSERT INTO envelopes (id, device_pk, sender, sender_device, type, body, ts) "
            "VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(rows_chunk)),
            [v for row in rows_chunk for v in row],
        )
    ids.save(c)
    return plan.results()


def delete_acked(c: sqlite3.Connection, ops: list[AckOp]) -> list[int]:
    """Delete every acked envelope of a batch at once; returns how many each op deleted.

    The fast path deletes by id and checks the owners of what it deleted; if
    anyone acked another device's envelope, it undoes that and deletes op by
    op with the owner in the query.
    """
    plan = AckPlan(ops)
    c.execute("SAVEPOINT acks")
    deleted: list[tuple[int, int]] = []
    for chunk in _chunks(list(plan.owner)):
        deleted.extend(
            c.execute(
                "DELETE FROM envelopes WHERE id IN (" + ",".join("?" * len(chunk)) + ") "
                "RETURNING id, device_pk",
                chunk,
            )
        )
    counts, foreign = plan.count(deleted)
    if foreign:
        c.execute("ROLLBACK TO acks")
        tx = SqliteTx(c)
        counts = [queries.run_sync(queries.delete_own(tx, op.device_pk, op.eids)) for op in ops]
    c.execute("RELEASE acks")
    return counts


def _chunks(rows: list[T]) -> list[list[T]]:
    return [rows[i : i + ROWS_PER_STATEMENT] for i in range(0, len(rows), ROWS_PER_STATEMENT)]
