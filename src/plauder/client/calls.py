"""Voice calls: `Call`, one call's state machine, and `Calls`, the service that keeps them.

The signalling travels as end-to-end encrypted 1:1 messages through the outbox
(protocol/content.py: CallOffer, CallRinging, CallAnswer, CallSelect,
CallReject, CallHangup), to every device of the other account; the server sees
ciphertext only. The media goes over WebRTC (call_media.py, aiortc), imported
only when a call needs it. docs/calls.md tells the whole story.

States (`CallState`), on the caller's device and on the callee's:

    outgoing ─► ringing ─► connecting ─► connected ─► ended
        caller: rejected, busy, missed (no answer), failed, ended (cancelled)
    ringing ─► connecting ─► connected ─► ended
        callee: rejected, busy, missed, failed, ended (answered_elsewhere)

Every call has a row in the call log (call_log.py) that follows it.
"""

import asyncio
import contextlib
import importlib
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from plauder.client.call_audio import AudioSink, AudioSource, default_sink, default_source
from plauder.client.call_errors import (
    CallError,
    CallFailed,
    CallFailure,
    CallStateError,
    CallsUnavailable,
)
from plauder.client.call_log import CallLog, CallLogEntry, CallStats
from plauder.client.connection import next_request_id
from plauder.client.errors import ClientError, ServerError
from plauder.client.events import CallStateChanged, Event, IncomingCall
from plauder.client.link import Link
from plauder.client.outbox import Outbox
from plauder.client.tasks import Background
from plauder.clock import Clock
from plauder.protocol.content import (
    CallAnswer,
    CallHangup,
    CallOffer,
    CallReject,
    CallRinging,
    CallSelect,
    CallSignal,
    encode_content,
)
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import GetTurn, Turn

if TYPE_CHECKING:
    from plauder.client.call_media import MediaSession, Relay

log = logging.getLogger(__name__)

RING_SECONDS = 45.0  # an unanswered call is missed after this long
SETUP_SECONDS = 15.0  # from offer or answer to connected media
SIGNAL_SECONDS = 10.0  # for the server to take a call message
LOST_GRACE_SECONDS = 1.0  # media gone: wait this long for the hang-up message first
STATS_SECONDS = 1.0  # how often a connected call's figures are refreshed


class CallState(StrEnum):
    """Where a call is. The last five are final."""

    OUTGOING = "outgoing"  # the offer went out; no device rings yet
    RINGING = "ringing"
    CONNECTING = "connecting"  # answered; the media is being set up
    CONNECTED = "connected"
    ENDED = "ended"
    REJECTED = "rejected"
    BUSY = "busy"
    MISSED = "missed"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Whether the call is over."""
        return self in _FINAL


_FINAL = frozenset(
    {CallState.ENDED, CallState.REJECTED, CallState.BUSY, CallState.MISSED, CallState.FAILED}
)

IncomingHandler = Callable[["Call"], Awaitable[None] | None]
HangupReason = Literal["hangup", "timeout", "cancelled", "failed"]


@dataclass(frozen=True, slots=True)
class CallSettings:
    """Timers of the calls (seconds); tests shorten them."""

    ring_timeout: float = RING_SECONDS
    setup_timeout: float = SETUP_SECONDS
    signal_timeout: float = SIGNAL_SECONDS


def media_module() -> ModuleType:
    """call_media (and with it aiortc), or CallsUnavailable."""
    try:
        return importlib.import_module("plauder.client.call_media")
    except ImportError as exc:
        raise CallsUnavailable(
            "voice calls need the calls extra: pip install 'plauder[calls]'"
        ) from exc


class Call:
    """One voice call with a contact, placed or offered on this device.

    Wait for its progress with `wait_state`, or follow CallStateChanged events.
    `stats` has the media's figures (refreshed every second while connected,
    final once the call ended).
    """

    def __init__(
        self,
        calls: "Calls",
        call_id: str,
        peer: str,
        *,
        direction: str,
        state: CallState,
        started: int,
        low_data: bool = False,
        offer: CallOffer | None = None,
        peer_device: int | None = None,
    ) -> None:
        self._calls = calls
        self.id = call_id
        self.peer = peer
        self.direction = direction  # "outgoing" | "incoming"
        self._state = state
        self.reason = ""  # a word on how it ended (hangup, cancelled, answered_elsewhere...)
        self.error = ""  # for a failed call: what went wrong, in words
        self.low_data = low_data
        self.started = started
        self.connected_at: int | None = None
        self.ended_at: int | None = None
        self.peer_device = peer_device  # the other side's device in the call
        self._offer = offer
        self._media: MediaSession | None = None
        self._stats = CallStats()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._ring_timer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Call({self.id[:8]} {self.direction} {self.peer} {self.state})"

    @property
    def state(self) -> CallState:
        """Where the call is now."""
        return self._state

    @property
    def outgoing(self) -> bool:
        """Whether this device placed the call."""
        return self.direction == "outgoing"

    @property
    def stats(self) -> CallStats:
        """The media's figures: bytes, bitrates, packet loss, round-trip time."""
        return self._stats

    @property
    def duration(self) -> float:
        """Seconds connected, so far or in all."""
        if self.connected_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self._calls.clock.now_ms()
        return max(0, end - self.connected_at) / 1000

    # --- what the user does --------------------------------------------------------------

    async def accept(
        self,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        *,
        low_data: bool = False,
        relay_only: bool = False,
    ) -> None:
        """Answer a ringing incoming call; returns once the media is connected.

        Sound comes from `source` and goes to `sink` (by default the microphone
        and speaker if there are any). Raises CallFailed (with its reason) if
        the media cannot be set up, including when the caller's DTLS certificate
        is not the one in its offer; CallStateError if the call does not ring
        (any more).
        """
        if self.outgoing or self.state is not CallState.RINGING or self._offer is None:
            raise CallStateError(f"only a ringing incoming call can be accepted ({self.state})")
        offer = self._offer
        self.low_data = self.low_data or low_data
        self._set(CallState.CONNECTING)
        try:
            async with asyncio.timeout(self._calls.settings.setup_timeout):
                media = await self._calls.new_media(source, sink, self.low_data, relay_only)
                if self.state.final:  # ended while the relay was asked for
                    await media.close()
                    raise CallStateError(f"the call ended: {self.reason or self.state}")
                self._media = media
                sdp = await media.answer(offer.sdp)
                await self._calls.signal(
                    self.peer, CallAnswer(call=self.id, sdp=sdp, device=self._calls.device_id)
                )
        except TimeoutError:
            self._fail(_timed_out(self._calls.settings.setup_timeout), tell=True)
        except CallFailed as exc:
            self._fail(exc, tell=True)
        except ClientError as exc:
            if not isinstance(exc, CallError):
                exc = CallFailed(CallFailure.NOT_SENT, f"the answer could not be sent: {exc}")
            self._fail(exc, tell=False)
        except Exception as exc:  # aiortc's own
            log.exception("answering call %s failed", self.id[:8])
            self._fail(_unprepared(exc), tell=True)
        else:
            await self._connect(media)
        self._check_connected()

    def _check_connected(self) -> None:
        """Raise what kept the call from connecting, if it did not."""
        if self._state is CallState.CONNECTED:
            return
        if self._state is CallState.FAILED:
            raise CallFailed(CallFailure(self.reason), self.error)
        raise CallStateError(f"the call ended: {self.reason or self._state}")

    async def reject(self) -> None:
        """Decline a ringing incoming call (the caller sees `rejected`)."""
        if self.outgoing or self.state is not CallState.RINGING:
            raise CallStateError(f"only a ringing incoming call can be rejected ({self.state})")
        self._set(CallState.REJECTED, "rejected")
        await self._tell(CallReject(call=self.id, reason="rejected", device=self._calls.device_id))
        await self.wait_ended()

    async def hangup(self) -> None:
        """End the call: cancel it while it rings, decline it if it rings here, or hang up."""
        if self.state.final:
            await self.wait_ended()
            return
        if not self.outgoing and self.state is CallState.RINGING:
            await self.reject()
            return
        ringing = self.state in (CallState.OUTGOING, CallState.RINGING)
        reason: HangupReason = "cancelled" if ringing else "hangup"
        self._set(CallState.ENDED, reason)
        await self._tell(self._hangup(reason))
        await self.wait_ended()

    async def wait_state(self, *states: CallState, timeout: float | None = None) -> CallState:
        """Wait until the call is in one of `states` or over; return its state then.

        Raises TimeoutError after `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            while self.state not in states and not self.state.final:
                changed = self._changed
                await changed.wait()
        return self.state

    async def wait_ended(self, timeout: float | None = None) -> CallState:
        """Wait until the call is over and its media closed (its final figures logged)."""
        async with asyncio.timeout(timeout):
            await self._closed.wait()
        return self.state

    async def refresh_stats(self) -> CallStats:
        """Read the media's figures now."""
        if self._media is not None and not self._closed.is_set():
            self._stats = await self._media.stats()
        return self._stats

    # --- what the other side does --------------------------------------------------------

    def signalled(self, device: int, content: CallSignal) -> None:
        """A call message from the other account's `device` (authenticated by Olm)."""
        if self.state.final:
            return
        match content:
            case CallRinging() if self.outgoing:
                if self.state is CallState.OUTGOING:
                    self._set(CallState.RINGING)
            case CallAnswer() if self.outgoing:
                self._answered(device, content.sdp)
            case CallReject() if self.outgoing and self.peer_device is None:
                busy = content.reason == "busy"
                self._set(CallState.BUSY if busy else CallState.REJECTED, content.reason)
                # the callee's other devices stop ringing
                self._calls.spawn(self._tell(self._hangup("cancelled")))
            case CallSelect() if not self.outgoing and device == self.peer_device:
                if content.device != self._calls.device_id:
                    self._set(CallState.ENDED, "answered_elsewhere")
            case CallHangup() if device == self.peer_device:
                self._hung_up(content.reason)
            case _:
                log.debug("call %s: %s from device %d ignored", self.id[:8], content, device)

    def _answered(self, device: int, sdp: str) -> None:
        if self.peer_device is not None or self.state not in (
            CallState.OUTGOING,
            CallState.RINGING,
        ):
            return  # another device answered first: our call_select tells this one
        self.peer_device = device
        self._set(CallState.CONNECTING)
        select = CallSelect(call=self.id, device=device)
        self._calls.spawn(self._tell(select))
        self._calls.spawn(self._accept_answer(sdp))

    async def _accept_answer(self, sdp: str) -> None:
        media = self._media
        assert media is not None
        try:
            await media.accept(sdp)
        except CallFailed as exc:
            self._fail(exc, tell=True)
            return
        await self._connect(media)

    def _hung_up(self, reason: str) -> None:
        if self.state is CallState.RINGING and not self.outgoing:
            self._set(CallState.MISSED, reason)
        elif reason == "failed":
            self._set(
                CallState.FAILED,
                CallFailure.REMOTE_FAILED,
                "the call failed on the other side",
            )
        else:
            self._set(CallState.ENDED, "remote_hangup")

    # --- the machinery -------------------------------------------------------------------

    async def _connect(self, media: "MediaSession") -> None:
        """Wait for the media; CONNECTED, or FAILED with the other side told."""
        media.on_lost = self._media_lost
        try:
            await media.wait_connected(self._calls.settings.setup_timeout)
        except CallFailed as exc:
            self._fail(exc, tell=True)
            return
        if self.state is CallState.CONNECTING:
            self._set(CallState.CONNECTED)
            self._calls.spawn(self._poll_stats())

    def _media_lost(self, failure: CallFailed) -> None:
        async def after_grace() -> None:
            await asyncio.sleep(LOST_GRACE_SECONDS)  # a hang-up message may be on its way
            self._fail(failure, tell=True)

        self._calls.spawn(after_grace())

    async def _poll_stats(self) -> None:
        while self.state is CallState.CONNECTED:
            await self.refresh_stats()
            await asyncio.sleep(STATS_SECONDS)

    def start_ringing(self, seconds: float) -> None:
        """Give up ringing after `seconds`: missed (the caller tells the callee)."""

        async def ring() -> None:
            await asyncio.sleep(seconds)
            if self.state in (CallState.OUTGOING, CallState.RINGING):
                self._set(CallState.MISSED, "timeout")
                if self.outgoing:
                    await self._tell(self._hangup("timeout"))

        self._ring_timer = self._calls.spawn(ring())

    def stop_ringing(self) -> None:
        """This device goes away while the call rings: missed here, nothing said."""
        self._set(CallState.MISSED, "closed")

    def attach(self, media: "MediaSession") -> None:
        """The media of an outgoing call, made with its offer."""
        self._media = media

    def _hangup(self, reason: HangupReason) -> CallHangup:
        return CallHangup(call=self.id, reason=reason, device=self._calls.device_id)

    async def _tell(self, content: CallSignal) -> None:
        """Send a call message to the other account, logging rather than raising a failure."""
        try:
            await self._calls.signal(self.peer, content)
        except ClientError as exc:
            log.warning("call %s: %s not sent: %s", self.id[:8], type(content).__name__, exc)

    def _fail(self, failure: CallError, *, tell: bool) -> None:
        if self.state.final:
            return
        reason = failure.reason if isinstance(failure, CallFailed) else CallFailure.NOT_SENT
        message = failure.message if isinstance(failure, CallFailed) else str(failure)
        log.warning("call %s failed: %s", self.id[:8], message)
        self._set(CallState.FAILED, reason, message)
        if tell:
            self._calls.spawn(self._tell(self._hangup("failed")))

    def _set(self, state: CallState, reason: str = "", error: str = "") -> None:
        """Move to a state: log row, event, waiters; at the end, timers and media go."""
        if self._state.final or state is self._state:
            return
        self._state = state
        now = self._calls.clock.now_ms()
        if state is CallState.CONNECTED:
            self.connected_at = now
        if state.final:
            self.reason, self.error, self.ended_at = reason, error, now
            if self._ring_timer is not None and self._ring_timer is not asyncio.current_task():
                self._ring_timer.cancel()
            self._calls.spawn(self._finish())
        self._calls.record(self)
        self._calls.emit(CallStateChanged(self, state.value, self.reason))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _finish(self) -> None:
        """Take the final figures, close the media, and log the bytes used."""
        try:
            if self._media is not None:
                with contextlib.suppress(Exception):  # figures are best effort at the end
                    self._stats = await self._media.stats()
                await self._media.close()
                self._calls.record_usage(self)
        finally:
            self._calls.forget(self)
            self._closed.set()


def _unprepared(exc: Exception) -> CallFailed:
    return CallFailed(CallFailure.MEDIA_FAILED, f"the media could not be prepared: {exc}")


def _timed_out(seconds: float) -> CallFailed:
    return CallFailed(
        CallFailure.SETUP_TIMEOUT, f"the call could not be set up within {seconds:g} s"
    )


@dataclass(frozen=True, slots=True)
class CallParts:
    """What the calls work with, built once by the Client."""

    number: str
    device_id: Callable[[], int | None]
    outbox: Outbox
    link: Link
    clock: Clock
    log: CallLog
    events: asyncio.Queue[Event]
    settings: CallSettings


class Calls:
    """This device's calls: placing them, the messages that drive them, their log.

    Only one call at a time: an offer while this device is in a call (or rings)
    is answered `busy`.
    """

    def __init__(self, parts: CallParts) -> None:
        self._parts = parts
        self.number = parts.number
        self.clock = parts.clock
        self.settings = parts.settings
        self._calls: dict[str, Call] = {}
        self._handlers: list[IncomingHandler] = []
        self._tasks = Background()  # their own: Inbox.wait_idle waits for the client's

    @property
    def device_id(self) -> int:
        """This device's id."""
        device = self._parts.device_id()
        if device is None:
            raise CallStateError("this profile is not registered")
        return device

    @property
    def active(self) -> Call | None:
        """The call this device is in (or that rings here), if any."""
        return next((c for c in self._calls.values() if not c.state.final), None)

    def get(self, call_id: str) -> Call | None:
        """A call still in progress (or just over), by id."""
        return self._calls.get(call_id)

    def log(self, limit: int = 50, peer: str | None = None) -> list[CallLogEntry]:
        """The call log, newest first."""
        return self._parts.log.entries(limit, peer)

    def on_incoming(self, handler: IncomingHandler) -> None:
        """Run `handler(call)` (a function or coroutine function) for every call that rings here."""
        self._handlers.append(handler)

    # --- placing a call ------------------------------------------------------------------

    async def call(
        self,
        peer: str,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        *,
        low_data: bool = False,
        relay_only: bool = False,
    ) -> Call:
        """Ring every device of `peer`; returns the call once the server took the offer.

        Raises CallStateError while in another call, CallsUnavailable without
        aiortc, CallFailed if the media cannot be prepared (no TURN relay in
        relay-only mode) or the offer cannot be sent.
        """
        if peer == self.number:
            raise CallStateError("you cannot call your own number")
        if self.active is not None:
            raise CallStateError("this device is in a call already: hang up first")
        media_module()
        call = Call(
            self,
            secrets.token_hex(16),
            peer,
            direction="outgoing",
            state=CallState.OUTGOING,
            started=self.clock.now_ms(),
            low_data=low_data,
        )
        self._calls[call.id] = call
        self.record(call, new=True)
        self.emit(CallStateChanged(call, call.state.value, ""))
        try:
            async with asyncio.timeout(self.settings.setup_timeout):
                media = await self.new_media(source, sink, low_data, relay_only)
                call.attach(media)
                sdp = await media.offer()
        except TimeoutError:
            call._fail(_timed_out(self.settings.setup_timeout), tell=False)
        except CallFailed as exc:
            call._fail(exc, tell=False)
        except Exception as exc:  # aiortc's own: this device must not stay "in a call"
            log.exception("preparing the media of call %s failed", call.id[:8])
            call._fail(_unprepared(exc), tell=False)
        if call.state.final:
            raise CallFailed(CallFailure(call.reason), call.error)
        offer = CallOffer(
            call=call.id, ts=self.clock.now_ms(), sdp=sdp, device=self.device_id, low_data=low_data
        )
        try:
            await self.signal(peer, offer)
        except ClientError as exc:
            call._fail(
                CallFailed(CallFailure.NOT_SENT, f"the call could not be placed: {exc}"), tell=False
            )
            raise CallFailed(CallFailure.NOT_SENT, call.error) from exc
        call.start_ringing(self.settings.ring_timeout)
        return call

    async def new_media(
        self,
        source: AudioSource | None,
        sink: AudioSink | None,
        low_data: bool,
        relay_only: bool,
    ) -> "MediaSession":
        """A peer connection with the server's TURN relay, if it has one."""
        module = media_module()
        relay = await self._relay()
        source = source if source is not None else default_source()
        sink = sink if sink is not None else default_sink()
        try:
            session: MediaSession = module.MediaSession(
                source, sink, low_data=low_data, relay=relay, relay_only=relay_only
            )
        except BaseException:
            source.close()  # the session would have closed them at the end
            sink.close()
            raise
        return session

    async def _relay(self) -> "Relay | None":
        """The server's TURN relay and fresh credentials; None if it has none."""
        try:
            answer = await self._parts.link.request(GetTurn(id=next_request_id()))
        except ServerError as exc:
            if exc.code != ErrorCode.UNKNOWN_FRAME:  # an older server: no TURN
                log.warning("no TURN credentials: %s", exc)
            return None
        if not isinstance(answer, Turn) or not answer.urls:
            return None
        relay: Relay = media_module().Relay(list(answer.urls), answer.username, answer.password)
        return relay

    # --- messages from the other side ----------------------------------------------------

    def receive(self, sender: str, device: int, server_ts: int, content: CallSignal) -> None:
        """A call message arrived (from the inbox, inside its transaction: no waiting here)."""
        if sender == self.number:
            return  # this account's own devices do not call each other
        if isinstance(content, CallOffer):
            self._offered(sender, device, server_ts, content)
            return
        call = self._calls.get(content.call)
        if call is None or call.peer != sender:
            log.debug("a %s for an unknown call ignored", type(content).__name__)
            return
        call.signalled(device, content)

    def _offered(self, sender: str, device: int, server_ts: int, offer: CallOffer) -> None:
        if offer.call in self._calls or self._parts.log.get(offer.call) is not None:
            return  # seen already
        if offer.device != device:
            log.warning("a call offer naming another device than its sender's ignored")
            return
        now = self.clock.now_ms()
        age = max(0, now - (server_ts or offer.ts)) / 1000
        call = Call(
            self,
            offer.call,
            sender,
            direction="incoming",
            state=CallState.RINGING,
            started=server_ts or now,
            low_data=offer.low_data,
            offer=offer,
            peer_device=device,
        )
        self.record(call, new=True)
        if age >= self.settings.ring_timeout:
            self._end_unrung(call, CallState.MISSED, "timeout")
            return
        try:
            media_module()
        except CallsUnavailable:
            self._end_unrung(call, CallState.MISSED, CallFailure.UNAVAILABLE)
            return
        if self.active is not None:
            self._end_unrung(call, CallState.BUSY, "busy")
            self.spawn(call._tell(CallReject(call=call.id, reason="busy", device=self.device_id)))
            return
        self._calls[call.id] = call
        self.spawn(call._tell(CallRinging(call=call.id, device=self.device_id)))
        call.start_ringing(self.settings.ring_timeout - age)
        self.emit(IncomingCall(call))
        self.emit(CallStateChanged(call, call.state.value, ""))
        for handler in self._handlers:
            self.spawn(_run_handler(handler, call))

    def _end_unrung(self, call: Call, state: CallState, reason: str) -> None:
        """An offer that does not ring: logged, reported, done."""
        self._calls[call.id] = call
        call._set(state, reason)

    # --- what the calls use --------------------------------------------------------------

    async def signal(self, peer: str, content: CallSignal) -> None:
        """Send a call message to every device of `peer`; return once the server has it."""
        outbox = self._parts.outbox
        entry = await outbox.queue(peer, secrets.token_bytes(16), encode_content(content))
        await outbox.await_sent(entry, self.settings.signal_timeout)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a call's side work; it is cancelled when the client closes."""
        return self._tasks.spawn(coro)

    def emit(self, event: Event) -> None:
        """Hand an event to the application."""
        self._parts.events.put_nowait(event)

    def record(self, call: Call, *, new: bool = False) -> None:
        """Write a call's row in the log."""
        if new:
            self._parts.log.add(
                call.id, call.peer, call.direction, call.state.value, call.started, call.low_data
            )
            return
        self._parts.log.update(
            call.id,
            state=call.state.value,
            reason=call.reason,
            connected=call.connected_at,
            ended=call.ended_at,
            low_data=call.low_data,
        )

    def record_usage(self, call: Call) -> None:
        """Write the bytes a call used in its row."""
        self._parts.log.set_usage(call.id, call.stats)

    def forget(self, call: Call) -> None:
        """A call is over and closed."""
        self._calls.pop(call.id, None)

    async def close(self) -> None:
        """Hang up every call (telling the other sides, briefly) and stop the timers.

        A call that only rings here stops ringing without declining it: another
        device of the account may still take it.
        """
        for call in list(self._calls.values()):
            if not call.outgoing and call.state is CallState.RINGING:
                call.stop_ringing()
            with contextlib.suppress(ClientError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await call.hangup()
        for task in self._tasks.tasks():
            task.cancel()
        await asyncio.gather(*self._tasks.tasks(), return_exceptions=True)


async def _run_handler(handler: IncomingHandler, call: Call) -> None:
    try:
        result = handler(call)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("an incoming-call handler failed")
