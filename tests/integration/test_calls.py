"""Voice calls between real SDK clients through a real server, the media over real aiortc.

Each call carries a generated tone each way; what a side heard is checked by FFT.
Loopback calls offer host candidates on 127.0.0.1 only (a fixture of these tests).
"""

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import msgspec
import numpy as np
import pytest

from plauder.client import CallStats, Client, IncomingCall
from plauder.client.call_audio import RATE, MemorySink, Tone
from plauder.client.call_errors import CallFailed, CallFailure
from plauder.client.calls import Call, CallState
from plauder.crypto import Device
from plauder.protocol.content import CallHangup, CallOffer, CallReject, CallSignal
from tests.conftest import ServerProcess, register
from tests.integration.test_messaging import next_of
from tests.services import Coturn

MakeClient = Callable[..., Any]
QUICK = 2.0  # seconds: both sides of a call end within this of each other


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """ICE host candidates on 127.0.0.1 only (aioice never offers loopback by itself)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    yield


def dominant(pcm: bytes | bytearray, skip: float = 0.5) -> float:
    """The strongest frequency of mono s16 PCM at 48 kHz, after the first `skip` seconds."""
    samples = np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float64)[int(skip * RATE) :]
    assert len(samples) > RATE // 2, f"only {len(samples) / RATE:.2f} s of sound"
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(spectrum.argmax())])


class Callee:
    """One device's answering machine: keeps the calls that ring, answers them as told."""

    def __init__(self, client: Client, frequency: float = 660, action: str = "accept") -> None:
        self.client = client
        self.heard = MemorySink()
        self.calls: list[Call] = []
        self.frequency = frequency
        self.action = action  # accept | reject | nothing
        self.relay_only = False
        self.errors: list[Exception] = []
        self.rang = asyncio.Event()
        client.on_incoming_call(self.ring)

    async def ring(self, call: Call) -> None:
        self.calls.append(call)
        self.rang.set()
        try:
            if self.action == "accept":
                await call.accept(Tone(self.frequency), self.heard, relay_only=self.relay_only)
            elif self.action == "reject":
                await call.reject()
        except Exception as exc:
            self.errors.append(exc)

    async def call(self, timeout: float = 10.0) -> Call:
        """The first call that rang here."""
        async with asyncio.timeout(timeout):
            await self.rang.wait()
        return self.calls[0]


async def ended_together(a: Call, b: Call, state_a: CallState, state_b: CallState) -> None:
    """Both calls reach their final states within QUICK seconds of each other."""
    assert await a.wait_ended(timeout=QUICK + 2) is state_a, (a.reason, a.error)
    assert await b.wait_ended(timeout=QUICK + 2) is state_b, (b.reason, b.error)
    assert a.ended_at is not None and b.ended_at is not None
    assert abs(a.ended_at - b.ended_at) <= QUICK * 1000


async def talk(
    caller: Client, callee: Callee, *, relay_only: bool = False, seconds: float = 2.5
) -> tuple[Call, Call, CallStats]:
    """The caller sends 440 Hz, the callee answers with 660 Hz; each hears the other's tone.

    Returns both ends of the call, over once the caller hung up, and the caller's figures.
    """
    heard_by_caller = MemorySink()
    call = await caller.call(
        callee.client.number, Tone(440), heard_by_caller, relay_only=relay_only
    )
    assert await call.wait_state(CallState.CONNECTED, timeout=10) is CallState.CONNECTED
    await asyncio.sleep(seconds)
    stats = await call.refresh_stats()
    for _ in range(50):  # the first round trip is known once RTCP reports met (0.5-1.5 s apart)
        if stats.round_trip_time is not None:
            break
        await asyncio.sleep(0.1)
        stats = await call.refresh_stats()
    await call.hangup()
    answered = await callee.call()
    await ended_together(call, answered, CallState.ENDED, CallState.ENDED)
    assert abs(dominant(heard_by_caller.pcm) - 660) <= 10
    assert abs(dominant(callee.heard.pcm) - 440) <= 10
    return call, answered, stats


async def test_tones_cross_both_ways_over_loopback(make_client: MakeClient, loopback: None) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    bob_side = Callee(bob, 660)
    call, answered, stats = await talk(alice, bob_side)
    assert (call.reason, answered.reason) == ("hangup", "remote_hangup")
    assert stats.bytes_sent > 0 and stats.bytes_received > 0 and not stats.relayed
    assert stats.round_trip_time is not None and stats.round_trip_time < 1.0
    assert call.connected_at is not None
    setup = (call.connected_at - call.started) / 1000
    print(f"set-up to connected: {setup * 1000:.0f} ms; {stats}")

    (out,) = alice.calls.log()
    (inc,) = bob.calls.log()
    assert (out.direction, out.state, out.peer) == ("outgoing", "ended", bob.number)
    assert (inc.direction, inc.state, inc.peer) == ("incoming", "ended", alice.number)
    assert 2.0 < out.duration < 10.0 and out.bytes_total > 0 and inc.bytes_total > 0


async def relayed_clients(
    server_factory: Callable[..., ServerProcess],
    coturn: Coturn,
    folder: Path,
    numbers: Iterator[str],
    count: int = 2,
) -> list[Client]:
    """Started clients of a server that hands out credentials for the test's coturn."""
    server = server_factory("relayed", **coturn.server_options())
    clients = []
    for _ in range(count):
        client = await register(server, folder, next(numbers))
        await client.start()
        clients.append(client)
    return clients


async def test_tones_cross_both_ways_through_coturn_in_relay_only_mode(
    server_factory: Callable[..., ServerProcess],
    coturn: Coturn,
    tmp_path: Path,
    numbers: Iterator[str],
) -> None:
    """No host candidates at all: the media can only flow through the relay."""
    alice, bob = await relayed_clients(server_factory, coturn, tmp_path / "profiles", numbers)
    try:
        bob_side = Callee(bob, 660)
        bob_side.relay_only = True
        _, answered, stats = await talk(alice, bob_side, relay_only=True)
        assert stats.relayed and answered.stats.relayed
        assert all(e.relayed for e in alice.calls.log() + bob.calls.log())
        assert len(coturn.allocations()) >= 2  # one relay address for each side
    finally:
        await alice.close()
        await bob.close()


async def test_relay_only_without_a_relay_fails_at_once(
    make_client: MakeClient, loopback: None
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    with pytest.raises(CallFailed, match="the server has none") as caught:
        await alice.call(bob.number, Tone(440), MemorySink(), relay_only=True)
    assert caught.value.reason is CallFailure.NO_RELAY
    assert [(e.state, e.reason) for e in alice.calls.log()] == [("failed", "no_relay")]
    assert alice.calls.active is None


async def test_relay_refusing_the_credentials_fails_relay_only_at_once_but_not_others(
    server_factory: Callable[..., ServerProcess],
    coturn: Coturn,
    tmp_path: Path,
    numbers: Iterator[str],
    loopback: None,
) -> None:
    """aiortc says nothing when a relay refuses: the call sees no relay candidate instead."""
    server = server_factory("wrong", **coturn.server_options(secret="not-the-secret-of-this-relay"))
    alice, bob = [await register(server, tmp_path / "profiles", next(numbers)) for _ in "ab"]
    try:
        await alice.start()
        await bob.start()
        Callee(bob)
        started = time.monotonic()
        with pytest.raises(CallFailed, match="refused") as caught:
            await alice.call(bob.number, Tone(440), MemorySink(), relay_only=True)
        assert caught.value.reason is CallFailure.NO_RELAY
        assert time.monotonic() - started < 2.0
        call = await alice.call(bob.number, Tone(440), MemorySink())  # host candidates serve
        assert await call.wait_state(CallState.CONNECTED, timeout=10) is CallState.CONNECTED
        await call.hangup()
    finally:
        await alice.close()
        await bob.close()


async def test_callee_hangs_up(make_client: MakeClient, loopback: None) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    bob_side = Callee(bob)
    call = await alice.call(bob.number, Tone(440), MemorySink())
    assert await call.wait_state(CallState.CONNECTED, timeout=10) is CallState.CONNECTED
    answered = await bob_side.call()
    assert await answered.wait_state(CallState.CONNECTED, timeout=5) is CallState.CONNECTED
    await asyncio.sleep(0.5)
    await answered.hangup()
    await ended_together(call, answered, CallState.ENDED, CallState.ENDED)
    assert (call.reason, answered.reason) == ("remote_hangup", "hangup")


async def test_reject(make_client: MakeClient, loopback: None) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    bob_side = Callee(bob, action="reject")
    call = await alice.call(bob.number, Tone(440), MemorySink())
    rejected = await bob_side.call()
    await ended_together(call, rejected, CallState.REJECTED, CallState.REJECTED)
    assert call.connected_at is None and not bob_side.errors
    assert [e.state for e in alice.calls.log()] == ["rejected"]
    assert [e.state for e in bob.calls.log()] == ["rejected"]


async def test_busy_while_in_another_call(make_client: MakeClient, loopback: None) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    carol: Client = await make_client()
    bob_side = Callee(bob)
    first = await carol.call(bob.number, Tone(440), MemorySink())
    assert await first.wait_state(CallState.CONNECTED, timeout=10) is CallState.CONNECTED

    second = await alice.call(bob.number, Tone(440), MemorySink())
    assert await second.wait_ended(timeout=QUICK) is CallState.BUSY
    assert second.reason == "busy"
    # bob's call with carol goes on; the one he could not take is in his log
    assert first.state is CallState.CONNECTED and len(bob_side.calls) == 1
    states = {(e.peer, e.state) for e in bob.calls.log()}
    assert (alice.number, "busy") in states and (carol.number, "connected") in states
    await first.hangup()
    await ended_together(first, bob_side.calls[0], CallState.ENDED, CallState.ENDED)


async def test_missed_when_nobody_answers(make_client: MakeClient, loopback: None) -> None:
    alice: Client = await make_client(ring_timeout=1.5)
    bob: Client = await make_client(ring_timeout=1.5)
    bob_side = Callee(bob, action="nothing")
    call = await alice.call(bob.number, Tone(440), MemorySink())
    assert await call.wait_state(CallState.RINGING, timeout=5) is CallState.RINGING
    ringing = await bob_side.call()
    assert ringing.state is CallState.RINGING
    await ended_together(call, ringing, CallState.MISSED, CallState.MISSED)
    assert call.reason == "timeout"
    assert [(e.direction, e.state) for e in bob.calls.log()] == [("incoming", "missed")]


async def test_offer_found_after_the_ring_time_is_missed_and_does_not_ring(
    make_client: MakeClient, loopback: None
) -> None:
    alice: Client = await make_client(ring_timeout=1.0)
    bob: Client = await make_client(start=False, ring_timeout=1.0)
    call = await alice.call(bob.number, Tone(440), MemorySink())
    assert await call.wait_ended(timeout=5) is CallState.MISSED  # nobody rang

    await bob.start()
    await bob.wait_idle()
    assert not [e for e in bob.pending_events() if isinstance(e, IncomingCall)]
    assert bob.calls.active is None
    [entry] = bob.calls.log()
    assert (entry.id, entry.direction, entry.state) == (call.id, "incoming", "missed")


async def test_caller_cancels_while_ringing(make_client: MakeClient, loopback: None) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    bob_side = Callee(bob, action="nothing")
    call = await alice.call(bob.number, Tone(440), MemorySink())
    ringing = await bob_side.call()
    await call.hangup()
    await ended_together(call, ringing, CallState.ENDED, CallState.MISSED)
    assert (call.reason, ringing.reason) == ("cancelled", "cancelled")


async def test_call_messages_from_others_or_naming_another_device_are_ignored(
    make_client: MakeClient, loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    carol: Client = await make_client()
    bob_side = Callee(bob, action="nothing")
    call = await alice.call(bob.number, Tone(440), MemorySink())
    ringing = await bob_side.call()
    # a third account cannot end a call it is not in, even knowing its id
    await carol.calls.signal(bob.number, CallHangup(call=call.id, reason="hangup", device=1))
    await carol.calls.signal(alice.number, CallReject(call=call.id, reason="busy", device=1))
    await asyncio.sleep(0.5)
    assert ringing.state is CallState.RINGING and call.state is CallState.RINGING
    await call.hangup()
    await ended_together(call, ringing, CallState.ENDED, CallState.MISSED)

    # an offer that names another device than the one that sent it does not ring
    signal = alice.calls.signal

    async def misnamed(peer: str, content: CallSignal) -> None:
        if isinstance(content, CallOffer):
            content = msgspec.structs.replace(content, device=content.device + 1)
        await signal(peer, content)

    monkeypatch.setattr(alice.calls, "signal", misnamed)
    second = await alice.call(bob.number, Tone(440), MemorySink())
    await asyncio.sleep(1.0)
    assert len(bob_side.calls) == 1 and second.state is CallState.OUTGOING
    assert [e.id for e in bob.calls.log()] == [call.id]
    await second.hangup()


async def test_a_ringing_device_that_closes_does_not_decline(
    make_client: MakeClient, loopback: None
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    bob_side = Callee(bob, action="nothing")
    call = await alice.call(bob.number, Tone(440), MemorySink())
    ringing = await bob_side.call()
    await bob.close()
    assert (ringing.state, ringing.reason) == (CallState.MISSED, "closed")
    await asyncio.sleep(0.5)
    assert call.state is CallState.RINGING  # another device could still answer
    await call.hangup()
    assert call.reason == "cancelled"


async def add_device(first: Client, server: ServerProcess, folder: Path, **kw: Any) -> Client:
    """A second device of `first`'s account, as device linking would make it (started).

    plauder has no device linking yet: this signs a new device with the account
    key and puts it in the server's database directly.
    """
    account = first.account_key
    device = Device.create()
    fallback = device.new_fallback_key()
    server.sql(
        "UPDATE accounts SET next_device_id = next_device_id + 1 WHERE number = ?", first.number
    )
    [(account_id, device_id)] = server.sql(
        "SELECT id, next_device_id - 1 FROM accounts WHERE number = ?", first.number
    )
    keys = account.sign_device(device.identity_key, device.signing_key, int(device_id))
    server.sql(
        "INSERT INTO devices (account_id, device_id, identity_key, signing_key, signature, "
        "created) VALUES (?, ?, ?, ?, ?, ?)",
        account_id,
        device_id,
        keys.identity_key,
        keys.signing_key,
        keys.signature,
        int(time.time() * 1000),
    )
    [(pk,)] = server.sql(
        "SELECT pk FROM devices WHERE account_id = ? AND device_id = ?", account_id, device_id
    )
    server.sql(
        "INSERT INTO fallback_keys (device_pk, key_id, key, signature) VALUES (?, ?, ?, ?)",
        pk,
        fallback.key_id,
        fallback.key,
        fallback.signature,
    )
    second = Client(folder, first.number, **kw)
    with second.store.transaction():
        second.store.put_secret("account_key", account.private_bytes())
        second._keys.adopt(device)
        second.store.put_setting("device_id", str(device_id))
        second.store.set_contact_key(first.number, account.public_key, int(time.time() * 1000))
    second.set_servers(first.servers)
    await second.start()
    return second


async def test_both_devices_ring_and_the_second_stops_when_the_first_accepts(
    make_client: MakeClient, server: ServerProcess, tmp_path: Path, loopback: None
) -> None:
    bob: Client = await make_client()
    bob2 = await add_device(bob, server, tmp_path / "bob-second-device")
    try:
        alice: Client = await make_client()
        phone = Callee(bob, action="nothing")
        tablet = Callee(bob2, action="nothing")
        call = await alice.call(bob.number, Tone(440), MemorySink())
        on_phone, on_tablet = await phone.call(), await tablet.call()
        assert on_phone.state is on_tablet.state is CallState.RINGING
        assert on_phone.id == on_tablet.id == call.id
        assert await call.wait_state(CallState.RINGING, timeout=5) is CallState.RINGING

        await on_phone.accept(Tone(660), phone.heard)
        assert await on_tablet.wait_ended(timeout=QUICK) is CallState.ENDED
        assert on_tablet.reason == "answered_elsewhere"
        assert call.state is CallState.CONNECTED and call.peer_device == bob.device_id
        await asyncio.sleep(1.5)
        await call.hangup()
        await ended_together(call, on_phone, CallState.ENDED, CallState.ENDED)
        assert abs(dominant(phone.heard.pcm) - 440) <= 10
        assert [e.reason for e in bob2.calls.log()] == ["answered_elsewhere"]
    finally:
        await bob2.close()


async def test_tampered_fingerprint_is_refused_by_the_callee(
    make_client: MakeClient, loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller whose offer names another certificate than the one it presents.

    This is what a party able to rewrite the SDP would do to sit in the middle
    of the media: the callee's DTLS handshake sees a certificate the
    authenticated offer does not name, and the callee refuses the call.
    """
    alice: Client = await make_client()
    bob: Client = await make_client()
    bob_side = Callee(bob)
    signal = alice.calls.signal

    async def tampered(peer: str, content: CallSignal) -> None:
        if isinstance(content, CallOffer):
            sdp = re.sub(
                r"^(a=fingerprint:\S+ )(\S+)",
                lambda m: m[1] + ":".join(["AB"] * ((len(m[2]) + 1) // 3)),
                content.sdp,
                flags=re.MULTILINE,
            )
            assert sdp != content.sdp
            content = msgspec.structs.replace(content, sdp=sdp)
        await signal(peer, content)

    monkeypatch.setattr(alice.calls, "signal", tampered)
    call = await alice.call(bob.number, Tone(440), MemorySink())
    refused = await bob_side.call()
    await ended_together(call, refused, CallState.FAILED, CallState.FAILED)
    [error] = bob_side.errors
    assert isinstance(error, CallFailed) and error.reason is CallFailure.FINGERPRINT_MISMATCH
    assert "intercepting" in str(error)
    assert refused.reason == "fingerprint_mismatch" and call.reason == "remote_failed"
    assert not bob_side.heard.pcm  # not a sample was played
    assert [e.reason for e in bob.calls.log()] == ["fingerprint_mismatch"]


async def test_low_data_uses_fewer_bytes_per_minute(
    make_client: MakeClient, loopback: None
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    bob_side = Callee(bob)
    per_minute = {}
    for low_data in (False, True):
        call = await alice.call(bob.number, Tone(440), MemorySink(), low_data=low_data)
        assert await call.wait_state(CallState.CONNECTED, timeout=10) is CallState.CONNECTED
        await asyncio.sleep(3.0)
        await call.hangup()
        await bob_side.calls[-1].wait_ended(timeout=QUICK)
        entry = alice.calls.log(limit=1)[0]
        assert entry.id == call.id and entry.low_data is low_data
        per_minute[low_data] = entry.bytes_per_minute
        assert call.stats.opus_bitrate == (12_000 if low_data else 32_000)
        assert bob_side.calls[-1].stats.opus_bitrate == call.stats.opus_bitrate  # both ways
    print(f"bytes per minute: default {per_minute[False]:.0f}, low-data {per_minute[True]:.0f}")
    assert per_minute[True] < 0.6 * per_minute[False]
    assert abs(dominant(bob_side.heard.pcm[-2 * RATE * 2 :], skip=0) - 440) <= 10


async def test_events_tell_the_story(make_client: MakeClient, loopback: None) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    call = await alice.call(bob.number, Tone(440), MemorySink())
    incoming = await next_of(bob, IncomingCall)
    assert incoming.peer == alice.number and incoming.call.id == call.id
    await incoming.call.accept(Tone(660), MemorySink())
    await call.wait_state(CallState.CONNECTED, timeout=5)
    await call.hangup()
    await incoming.call.wait_ended(timeout=QUICK)
    seen = [(e.state, e.reason) for e in alice.pending_events() if hasattr(e, "state")]
    assert seen == [
        ("outgoing", ""),
        ("ringing", ""),
        ("connecting", ""),
        ("connected", ""),
        ("ended", "hangup"),
    ]
