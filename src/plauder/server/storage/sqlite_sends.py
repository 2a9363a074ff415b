"""Storing all sends of one group commit with a few multi-row statements."""

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from plauder.protocol.frames import OutEnvelope
from plauder.server.errors import ServiceError
from plauder.server.storage.base import Delivery, Sender, StoredMessage

T = TypeVar("T")

ROWS_PER_STATEMENT = 400  # 6 values a row stays far below SQLite's 32766 variables


@dataclass(frozen=True, slots=True)
class SendOp:
    """One `send` waiting in the writer's queue."""

    sender: Sender
    cmid: bytes
    envelopes: list[OutEnvelope]
    now_ms: int


Resolver = Callable[[sqlite3.Connection, Sender, list[OutEnvelope]], list[tuple[int, OutEnvelope]]]
Outcome = StoredMessage | ServiceError


class EnvelopeIds:
    """Hands out envelope ids in commit order; persisted once per batch, never reused."""

    def __init__(self, c: sqlite3.Connection) -> None:
        row = c.execute("SELECT value FROM counters WHERE name = 'envelope_id'").fetchone()
        top = c.execute("SELECT max(id) FROM envelopes").fetchone()[0] or 0
        self.next = max(row[0] if row else 0, top) + 1
        self._saved = self.next

    def take(self) -> int:
        """The next id."""
        eid = self.next
        self.next += 1
        return eid

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
    c: sqlite3.Connection, ops: list[SendOp], resolve: Resolver, ids: EnvelopeIds
) -> list[Outcome]:
    """Check and store many sends; a refused one is an error, the rest are stored."""
    outcomes: list[Outcome | None] = [None] * len(ops)
    targets: dict[int, list[tuple[int, OutEnvelope]]] = {}
    for i, op in enumerate(ops):
        try:
            targets[i] = resolve(c, op.sender, op.envelopes)
        except ServiceError as exc:
            outcomes[i] = exc
    fresh = _record_cmids(c, ops, list(targets))
    rows: list[tuple[int, int, str, int, int, bytes, int]] = []
    for i, found in targets.items():
        op = ops[i]
        if i not in fresh:
            outcomes[i] = StoredMessage(_first_ts(c, op), True, ())
            continue
        deliveries = []
        for device_pk, env in found:
            eid = ids.take()
            rows.append(
                (
                    eid,
                    device_pk,
                    op.sender.number,
                    op.sender.device_id,
                    env.type,
                    env.body,
                    op.now_ms,
                )
            )
            deliveries.append(Delivery(device_pk, eid, env))
        outcomes[i] = StoredMessage(op.now_ms, False, tuple(deliveries))
    for chunk in _chunks(rows):
        c.execute(
            "INSERT INTO envelopes (id, device_pk, sender, sender_device, type, body, ts) "
            "VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
            [v for row in chunk for v in row],
        )
    ids.save(c)
    return [o for o in outcomes if o is not None]


def _record_cmids(c: sqlite3.Connection, ops: list[SendOp], indexes: list[int]) -> set[int]:
    """Insert dedup records; returns the indexes whose (device, cmid) was new."""
    inserted: set[tuple[int, bytes]] = set()
    keys = [(ops[i].sender.device_pk, ops[i].cmid, ops[i].now_ms) for i in indexes]
    for chunk in _chunks(keys):
        inserted.update(
            (r[0], bytes(r[1]))
            for r in c.execute(
                "INSERT INTO sent_messages (device_pk, cmid, ts) VALUES "
                + ",".join(["(?, ?, ?)"] * len(chunk))
                + " ON CONFLICT DO NOTHING RETURNING device_pk, cmid",
                [v for key in chunk for v in key],
            )
        )
    fresh: set[int] = set()
    for i in indexes:  # the first of two equal sends in one batch is the fresh one
        key = (ops[i].sender.device_pk, ops[i].cmid)
        if key in inserted:
            inserted.discard(key)
            fresh.add(i)
    return fresh


def _first_ts(c: sqlite3.Connection, op: SendOp) -> int:
    row = c.execute(
        "SELECT ts FROM sent_messages WHERE device_pk = ? AND cmid = ?",
        (op.sender.device_pk, op.cmid),
    ).fetchone()
    return int(row[0]) if row else op.now_ms


def _chunks(rows: list[T]) -> list[list[T]]:
    return [rows[i : i + ROWS_PER_STATEMENT] for i in range(0, len(rows), ROWS_PER_STATEMENT)]


@dataclass(frozen=True, slots=True)
class AckOp:
    """One `ack` waiting in the writer's queue."""

    device_pk: int
    eids: list[int]


def delete_acked(c: sqlite3.Connection, ops: list[AckOp]) -> list[int]:
    """Delete every acked envelope of a batch at once; returns how many each op deleted.

    A device may only delete its own envelopes. The fast path deletes by id
    and checks the owners of what it deleted; if anyone acked another device's
    envelope, it undoes that and deletes op by op with the owner in the query.
    """
    owner: dict[int, int] = {}
    for i, op in enumerate(ops):
        for eid in op.eids:
            owner.setdefault(eid, i)
    counts = [0] * len(ops)
    c.execute("SAVEPOINT acks")
    foreign = False
    for chunk in _chunks(list(owner)):
        for eid, device_pk in c.execute(
            "DELETE FROM envelopes WHERE id IN (" + ",".join("?" * len(chunk)) + ") "
            "RETURNING id, device_pk",
            chunk,
        ):
            i = owner[eid]
            if ops[i].device_pk != device_pk:
                foreign = True
            counts[i] += 1
    if foreign:
        c.execute("ROLLBACK TO acks")
        counts = [_delete_own(c, op) for op in ops]
    c.execute("RELEASE acks")
    return counts


def _delete_own(c: sqlite3.Connection, op: AckOp) -> int:
    deleted = 0
    for chunk in _chunks(sorted(set(op.eids))):
        deleted += c.execute(
            "DELETE FROM envelopes WHERE device_pk = ? AND id IN ("
            + ",".join("?" * len(chunk))
            + ")",
            (op.device_pk, *chunk),
        ).rowcount
    return deleted
