"""Messages: validate a `send`, store it durably, hand its envelopes to the router."""

from plauder.clock import Clock
from plauder.protocol import codec
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import Envelope, Send, Sent
from plauder.server.config import Config
from plauder.server.errors import ServiceError
from plauder.server.metrics import Metrics
from plauder.server.router import Router
from plauder.server.storage import Delivery, Store
from plauder.server.storage.base import Sender

CMID_SIZES = range(8, 33)


class Messages:
    """Stores messages before acknowledging them and routes them to their devices."""

    def __init__(
        self, store: Store, router: Router, clock: Clock, config: Config, metrics: Metrics
    ) -> None:
        self._store = store
        self._router = router
        self._clock = clock
        self._config = config
        self._metrics = metrics

    def check(self, frame: Send) -> None:
        """Reject a `send` that breaks a limit, before anything is stored."""
        if not frame.envelopes:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "a send needs at least one envelope")
        if len(frame.envelopes) > self._config.max_envelopes_per_send:
            raise ServiceError(
                ErrorCode.TOO_MANY_ENVELOPES,
                f"at most {self._config.max_envelopes_per_send} envelopes per send",
            )
        if len(frame.cmid) not in CMID_SIZES:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "cmid must be 8 to 32 bytes")
        for env in frame.envelopes:
            if len(env.body) > self._config.max_body_bytes:
                raise ServiceError(
                    ErrorCode.ENVELOPE_TOO_LARGE,
                    f"an envelope body may have at most {self._config.max_body_bytes} bytes",
                )
            if env.type not in (0, 1) or not env.body:
                raise ServiceError(ErrorCode.INVALID_REQUEST, "envelope type must be 0 or 1")

    async def store(self, sender: Sender, frame: Send) -> tuple[Sent, tuple[Delivery, ...]]:
        """Store the message (or find it already stored); returns the answer and deliveries."""
        now = self._clock.now_ms()
        if frame.ephemeral:
            targets = await self._store.resolve_targets(sender, list(frame.envelopes))
            return Sent(id=frame.id, ts=now), targets
        stored = await self._store.store_message(sender, frame.cmid, list(frame.envelopes), now)
        if not stored.duplicate:
            self._metrics.messages_stored += 1
        return Sent(id=frame.id, ts=stored.ts, duplicate=stored.duplicate), stored.deliveries

    async def deliver(self, sender: Sender, ts: int, deliveries: tuple[Delivery, ...]) -> None:
        """Push each envelope to its device's connection, if it has one."""
        for d in deliveries:
            data = codec.encode(
                Envelope(
                    eid=d.eid,
                    sender=sender.number,
                    sender_device=sender.device_id,
                    type=d.envelope.type,
                    body=d.envelope.body,
                    ts=ts,
                )
            )
            if d.eid:
                await self._router.deliver(d.device_pk, d.eid, data)
            else:
                await self._router.push(d.device_pk, data)
        self._router.flush()
