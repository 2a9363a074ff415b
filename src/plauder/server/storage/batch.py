"""The backend-neutral part of group commits: checking sends and sorting out acks."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import OutEnvelope
from plauder.server.errors import ServiceError
from plauder.server.storage.base import Delivery, Sender, StoredMessage

# (id, device_pk, sender number, sender device id, type, body, ts)
EnvelopeRow = tuple[int, int, str, int, int, bytes, int]
Outcome = StoredMessage | ServiceError


@dataclass(frozen=True, slots=True)
class SendOp:
    """One `send` waiting for the next group commit."""

    sender: Sender
    cmid: bytes
    envelopes: list[OutEnvelope]
    now_ms: int


@dataclass(frozen=True, slots=True)
class AckOp:
    """One `ack` waiting for the next group commit."""

    device_pk: int
    eids: list[int]


def numbers_of(ops: Iterable[SendOp]) -> list[str]:
    """Every recipient number of some sends, once each."""
    return list(dict.fromkeys(env.to for op in ops for env in op.envelopes))


def resolve(
    sender: Sender, envelopes: list[OutEnvelope], devices: Callable[[str], dict[int, int]]
) -> list[tuple[int, OutEnvelope]]:
    """Map envelopes to device pks, insisting each account's devices are all covered.

    `devices(number)` gives device_id -> pk of an account ({} if unknown).
    """
    by_number: dict[str, list[OutEnvelope]] = {}
    for env in envelopes:
        by_number.setdefault(env.to, []).append(env)
    out: list[tuple[int, OutEnvelope]] = []
    for number, envs in by_number.items():
        pks = dict(devices(number))
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


class SendPlan:
    """The sends of one batch: which are refused, new or repeated, and the rows to insert."""

    def __init__(self, ops: list[SendOp], devices: Callable[[str], dict[int, int]]) -> None:
        self.ops = ops
        self.outcomes: list[Outcome | None] = [None] * len(ops)
        self.targets: dict[int, list[tuple[int, OutEnvelope]]] = {}
        for i, op in enumerate(ops):
            try:
                self.targets[i] = resolve(op.sender, op.envelopes, devices)
            except ServiceError as exc:
                self.outcomes[i] = exc

    def cmid_keys(self) -> list[tuple[int, bytes, int]]:
        """(device_pk, cmid, ts) dedup records of the sends that passed the checks."""
        return [
            (self.ops[i].sender.device_pk, self.ops[i].cmid, self.ops[i].now_ms)
            for i in self.targets
        ]

    def rows(
        self, inserted: Iterable[tuple[int, bytes]], take_ids: Callable[[int], list[int]]
    ) -> tuple[list[EnvelopeRow], list[int]]:
        """Envelope rows of the new sends, and the indexes of repeated ones.

        `inserted` are the dedup records the database accepted; of two equal
        sends in one batch the first is the new one. `take_ids(n)` hands out
        n envelope ids.
        """
        fresh = set(inserted)
        new: list[int] = []
        repeated: list[int] = []
        for i in self.targets:
            key = (self.ops[i].sender.device_pk, self.ops[i].cmid)
            if key in fresh:
                fresh.discard(key)
                new.append(i)
            else:
                repeated.append(i)
        ids = iter(take_ids(sum(len(self.targets[i]) for i in new)))
        rows: list[EnvelopeRow] = []
        for i in new:
            op = self.ops[i]
            deliveries = []
            for device_pk, env in self.targets[i]:
                eid = next(ids)
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
            self.outcomes[i] = StoredMessage(op.now_ms, False, tuple(deliveries))
        return rows, repeated

    def repeated(self, i: int, first_ts: int | None, queued: tuple[Delivery, ...] = ()) -> None:
        """Record that send i was stored before, at first_ts; `queued` is routed again."""
        ts = self.ops[i].now_ms if first_ts is None else first_ts
        self.outcomes[i] = StoredMessage(ts, True, queued)

    def results(self) -> list[Outcome]:
        """One outcome per op, in order."""
        return [o for o in self.outcomes if o is not None]


class AckPlan:
    """The acks of one batch: every acked id once, and which op asked for it."""

    def __init__(self, ops: list[AckOp]) -> None:
        self.ops = ops
        self.owner: dict[int, int] = {}
        for i, op in enumerate(ops):
            for eid in op.eids:
                self.owner.setdefault(eid, i)

    def count(self, deleted: Iterable[tuple[int, int]]) -> tuple[list[int], bool]:
        """Deleted envelopes per op from (eid, device_pk) rows; True if one was foreign.

        A device may only delete its own envelopes: if any deleted row belongs
        to another device, the caller undoes the delete and goes op by op.
        """
        counts = [0] * len(self.ops)
        foreign = False
        for eid, device_pk in deleted:
            i = self.owner[eid]
            if self.ops[i].device_pk != device_pk:
                foreign = True
            counts[i] += 1
        return counts, foreign
