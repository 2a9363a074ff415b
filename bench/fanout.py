"""Group traffic in a load generator: senders post to one group, every member acks.

A group message is a `group_send` whose body is a GroupBody exactly as large as a
100-character text under Megolm, random bytes standing in for the ciphertext except its
first 13: the phase, the sender's account index and the scheduled send time
(CLOCK_MONOTONIC, the same in every process). Each generator tallies per message how
many of its members got it, when the first and the last did, and every envelope's
latency; the bench adds the generators' tallies up. Members ack everything stored (group
messages and the server's notices) as the SDK does (see traffic.Acker).
"""

import asyncio
import contextlib
import random
import secrets
import struct
import time
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass

from bench.accounts import number
from bench.loadgen import LoadWorker
from bench.traffic import Acker, ticks
from bench.wire import OnFrame, Wire, WireError
from bench.workers import Args
from plauder.crypto.groups import OutboundGroupSession
from plauder.protocol.content import Text, encode_content
from plauder.protocol.frames import (
    Envelope,
    Error,
    GroupCreate,
    GroupDeviceList,
    GroupDevices,
    GroupInfo,
    GroupSend,
    ServerFrame,
)
from plauder.protocol.groups import (
    GROUP_MESSAGE,
    GROUP_NOTICE,
    GroupBody,
    decode_body,
    encode_body,
)

HEADER = struct.Struct(">BIQ")  # phase, sender index, scheduled send time (ns)
TEXT_CHARS = 100


@dataclass(frozen=True)
class BodyShape:
    """The size of a real group message: a Megolm session id and ciphertext length."""

    session_id: str
    ciphertext_bytes: int
    body_bytes: int  # the encoded GroupBody, what the server stores

    @classmethod
    def of_text(cls, chars: int = TEXT_CHARS) -> "BodyShape":
        """Encrypt one text of `chars` characters with a real Megolm session and measure it."""
        session = OutboundGroupSession.create("bench", 0)
        text = Text(id=secrets.token_hex(16), ts=int(time.time() * 1000), body="x" * chars)
        sealed = session.encrypt(encode_content(text), 0)
        body = encode_body(GroupBody(session_id=sealed.session_id, ciphertext=sealed.ciphertext))
        return cls(sealed.session_id, len(sealed.ciphertext), len(body))


class _Phase:
    """What one generator's members received of one phase's messages."""

    def __init__(self) -> None:
        self.messages: dict[tuple[int, int], list[int]] = {}  # key -> [count, first, last]
        self.latency_ms = array("d")
        self.received = 0

    def add(self, sender: int, stamp: int, now: int) -> None:
        entry = self.messages.get((sender, stamp))
        if entry is None:
            self.messages[(sender, stamp)] = [1, now, now]
        else:
            entry[0] += 1
            entry[2] = now
        self.latency_ms.append((now - stamp) / 1e6)
        self.received += 1


class GroupWorker(LoadWorker):
    """Members of one group, some of them senders; every connection acks what it gets.

    The spec adds `senders` (account indices), `session_id` and `ciphertext_bytes`.
    """

    def __init__(self, spec: Args) -> None:
        super().__init__(spec)
        self.senders: list[int] = [i for i in spec["senders"] if i in self.idents]
        self.shape = BodyShape(spec["session_id"], spec["ciphertext_bytes"], 0)
        self.gid = b""
        self.digests: dict[int, bytes] = {}
        self.phases: defaultdict[int, _Phase] = defaultdict(_Phase)
        self.ackers: list[Acker] = []
        self.notices = 0
        self.errors: Counter[str] = Counter()

    def attach(self, index: int, wire: Wire) -> None:
        """Tally and ack every envelope from the start."""
        acker = Acker(wire, self.ack_interval)
        self.ackers.append(acker)
        wire.on_frame = self._member(acker)

    def _member(self, acker: Acker) -> OnFrame:
        phases = self.phases

        def on_frame(frame: ServerFrame) -> None:
            if isinstance(frame, Envelope):
                now = time.monotonic_ns()
                if frame.eid:
                    acker.add(frame.eid)
                if frame.type == GROUP_MESSAGE:
                    phase, sender, stamp = HEADER.unpack_from(decode_body(frame.body).ciphertext)
                    phases[phase].add(sender, stamp, now)
                elif frame.type == GROUP_NOTICE:
                    self.notices += 1
            elif isinstance(frame, Error):
                self.errors["ack:" + frame.code] += 1

        return on_frame

    async def cmd_create(self, gid: bytes, creator: int, members: list[int]) -> Args:
        """The creator (if it is this worker's) makes the group with all the members."""
        self.gid = gid
        wire = self.wires.get(creator)
        if wire is None:
            return {"created": False}
        numbers = [number(i) for i in members]
        frame = GroupCreate(id=wire.next_id(), gid=gid, members=numbers)
        info = await wire.request(frame, timeout=120)
        if not isinstance(info, GroupInfo):
            raise RuntimeError(f"unexpected answer to group_create: {info!r}")
        return {"created": True, "members": len(info.members), "version": info.version}

    async def cmd_digests(self, timeout: float) -> Args:
        """Every connected sender without one fetches the group's device list and digest."""
        devices = 0
        for index in self.senders:
            wire = self.wires.get(index)
            if wire is None or index in self.digests:
                continue
            answer = await wire.request(GroupDevices(id=wire.next_id(), gid=self.gid), timeout)
            if not isinstance(answer, GroupDeviceList):
                raise RuntimeError(f"unexpected answer to group_devices: {answer!r}")
            self.digests[index] = answer.digest
            devices = sum(len(m.devices) for m in answer.members)
        return {"devices": devices}

    async def cmd_send(
        self, phase: int, senders: list[int], rate: float, count: int, timeout: float
    ) -> Args:
        """Send `count` group messages at `rate`/s, round robin over these of our senders."""
        active = [i for i in self.senders if i in senders and i in self.digests]
        commit_ms, lag_ms = array("d"), array("d")
        sent: list[tuple[int, int]] = []
        errors: Counter[str] = Counter()
        tasks: list[asyncio.Task[None]] = []

        async def one(index: int, due: int) -> None:
            wire = self.wires[index]
            filler = random.randbytes(self.shape.ciphertext_bytes - HEADER.size)
            ciphertext = HEADER.pack(phase, index, due) + filler
            body = encode_body(GroupBody(session_id=self.shape.session_id, ciphertext=ciphertext))
            frame = GroupSend(
                id=wire.next_id(),
                gid=self.gid,
                cmid=random.randbytes(16),
                body=body,
                digest=self.digests[index],
            )
            try:
                await wire.request(frame, timeout)
            except WireError as exc:
                errors[exc.code or "connection"] += 1
                return
            commit_ms.append((time.monotonic_ns() - due) / 1e6)
            sent.append((index, due))

        async def pace(start: int) -> None:
            k = 0
            async for due in ticks(start, rate, count):
                lag_ms.append((time.monotonic_ns() - due) / 1e6)
                tasks.append(asyncio.ensure_future(one(active[k % len(active)], due)))
                k += 1
            await asyncio.gather(*tasks)

        start = time.monotonic_ns()
        if active and count > 0:
            try:
                await asyncio.wait_for(pace(start), timeout)
            except TimeoutError:
                errors["timeout"] += 1
            finally:
                for task in tasks:
                    task.cancel()
        return {
            "start_ns": start,
            "sent": sent,
            "commit_ms": commit_ms.tolist(),
            "lag_ms": lag_ms.tolist(),
            "errors": dict(errors),
        }

    async def cmd_collect(self, phase: int, expect: int, timeout: float) -> Args:
        """Wait until our members got `expect` envelopes of a phase; what they got, and when."""
        deadline = time.monotonic() + timeout
        tally = self.phases[phase]
        while tally.received < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for acker in self.ackers:  # the last acks go out before the next phase
            with contextlib.suppress(WireError):
                await asyncio.wait_for(acker.flush(), max(0.1, deadline - time.monotonic()))
        del self.phases[phase]
        return {
            "received": tally.received,
            "messages": [[s, t, *entry] for (s, t), entry in tally.messages.items()],
            "latency_ms": tally.latency_ms.tolist(),
            "notices": self.notices,
            "errors": dict(self.errors),
        }
