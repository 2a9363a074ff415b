"""One call's media: an aiortc peer connection that sends and receives Opus audio.

This module imports aiortc; calls.py imports it only when a call needs media,
so the SDK works without the `plauder[calls]` extra.

- ICE uses only what the caller gives: the server's TURN relay, or nothing
  (host candidates). aiortc's default public STUN server is never used. With
  `relay_only`, only relayed candidates are gathered; aiortc does not say when
  the relay refused an allocation, so an SDP without a `typ relay` candidate
  fails the call at once (`no_relay`).
- Opus only. The track encodes its own Opus packets with PyAV (aiortc sends
  pre-encoded packets as they are), so the bitrate and packet length are ours:
  32 kbit/s mono in 20 ms packets, or 12 kbit/s mono in 60 ms packets in
  low-data mode (fewer packets, so fewer header bytes). Each side states the
  most it wants to receive as `maxaveragebitrate` in its SDP, and each sends at
  the lower of its own cap and the other's.
- aiortc checks the peer's DTLS certificate against the remote SDP's
  fingerprints and fails the handshake if they differ. After connecting, this
  module checks again itself, against the fingerprints read from the SDP that
  came through the end-to-end encryption, and names a mismatch
  (`fingerprint_mismatch`) when the handshake failed.
"""

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.packet import Packet
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from plauder.client.call_audio import RATE, AudioSink, AudioSource
from plauder.client.call_errors import CallFailed, CallFailure
from plauder.client.call_log import CallStats
from plauder.client.call_sdp import (
    fingerprints,
    has_relay_candidate,
    max_average_bitrate,
    opus_payload_type,
    with_opus_parameters,
)
from plauder.client.media_audio import frame_pcm

log = logging.getLogger(__name__)

DEFAULT_BITRATE = 32_000  # bits per second of Opus: clear speech
LOW_DATA_BITRATE = 12_000  # still intelligible speech
MIN_BITRATE = 6_000  # the least Opus is asked for, whatever the other side states
FRAME_MS = 20
LOW_DATA_FRAME_MS = 60  # at or below LOW_DATA_BITRATE: a third of the packets
PACKET_OVERHEAD = 28  # bytes of IPv4 and UDP headers per packet
_TIME_BASE = fractions.Fraction(1, RATE)
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-224": hashes.SHA224,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}


@dataclass(frozen=True, slots=True)
class Relay:
    """A TURN relay and its short-lived credentials, from the server's `turn` answer."""

    urls: list[str]
    username: str
    password: str


def frame_ms_for(bitrate: int) -> int:
    """The packet length for an Opus bitrate: longer packets at low-data rates."""
    return LOW_DATA_FRAME_MS if bitrate <= LOW_DATA_BITRATE else FRAME_MS


class OpusTrack(MediaStreamTrack):
    """Sound from a source, paced in real time and encoded as Opus packets by PyAV."""

    kind = "audio"

    def __init__(self, source: AudioSource, bitrate: int) -> None:
        super().__init__()
        self._source = source
        self.bitrate = bitrate
        self._frame_ms = frame_ms_for(bitrate)
        self._encoder: AudioCodecContext | None = None
        self._packets: list[Packet[Any]] = []
        self._pts = 0  # samples read from the source so far
        self._start: float | None = None

    def configure(self, bitrate: int) -> None:
        """Aim at another bitrate (a new encoder from the next packet on)."""
        if bitrate != self.bitrate:
            self.bitrate = bitrate
            self._frame_ms = frame_ms_for(bitrate)
            self._encoder = None

    def _new_encoder(self) -> AudioCodecContext:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = self.bitrate
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = RATE
        codec.time_base = _TIME_BASE
        codec.options = {
            "application": "voip",
            "frame_duration": str(self._frame_ms),
            "vbr": "constrained",  # the bitrate is a cap, not an average that tones exceed
        }
        return codec

    async def recv(self) -> "Packet[Any]":
        """The next Opus packet, when its sound would have been captured in real time."""
        while not self._packets:
            if self.readyState != "live":
                raise MediaStreamError
            if self._encoder is None:
                self._encoder = self._new_encoder()
            samples = RATE * self._frame_ms // 1000
            if self._start is None:
                self._start = time.monotonic()
            wait = self._start + (self._pts + samples) / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            pcm = await self._source.read(samples)
            frame = AudioFrame(format="s16", layout="mono", samples=samples)
            frame.planes[0].update(pcm.ljust(frame.planes[0].buffer_size, b"\0"))
            frame.sample_rate = RATE
            frame.pts = self._pts
            frame.time_base = _TIME_BASE
            self._pts += samples
            self._packets.extend(self._encoder.encode(frame))
        return self._packets.pop(0)


class MediaSession:
    """The peer connection of one call, from offer or answer to close.

    `on_lost` is called once if the media fails or closes after it connected.
    """

    def __init__(
        self,
        source: AudioSource,
        sink: AudioSink,
        *,
        low_data: bool,
        relay: Relay | None,
        relay_only: bool,
    ) -> None:
        if relay_only and relay is None:
            raise CallFailed(
                CallFailure.NO_RELAY, "relay-only calling needs a TURN relay; the server has none"
            )
        servers = (
            [RTCIceServer(urls=relay.urls, username=relay.username, credential=relay.password)]
            if relay
            else []  # never aiortc's default public STUN server
        )
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        self._pc = RTCPeerConnection(
            RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)
        )
        self._own_cap = LOW_DATA_BITRATE if low_data else DEFAULT_BITRATE
        self._track = OpusTrack(source, self._own_cap)
        self._transceiver = self._pc.addTransceiver(self._track, direction="sendrecv")
        opus = [
            c
            for c in RTCRtpSender.getCapabilities("audio").codecs
            if c.mimeType.lower() == "audio/opus"
        ]
        self._transceiver.setCodecPreferences(opus)
        self._source = source
        self._sink = sink
        self._relay_only = relay_only
        self._expected: list[tuple[str, str]] = []
        self._failure: CallFailed | None = None
        self._settled = asyncio.Event()  # connected or failed
        self._connected_at: float | None = None
        self._pump: asyncio.Task[None] | None = None
        self._closing = False
        self.on_lost: Callable[[CallFailed], None] | None = None
        self._pc.on("connectionstatechange", self._state_changed)

    # --- negotiation ---------------------------------------------------------------------

    async def offer(self) -> str:
        """Gather candidates and return the offer's SDP (aiortc does not trickle)."""
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return self._local_sdp()

    async def answer(self, offer: str) -> str:
        """Take an offer's SDP, gather candidates and return the answer's SDP."""
        self._take_remote(offer)
        await self._set_remote(offer, "offer")
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return self._local_sdp()

    async def accept(self, answer: str) -> None:
        """Take the answer's SDP: ICE and DTLS start."""
        self._take_remote(answer)
        await self._set_remote(answer, "answer")

    async def _set_remote(self, sdp: str, kind: str) -> None:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except (ValueError, AttributeError, LookupError) as exc:
            raise CallFailed(CallFailure.BAD_SDP, f"the other side's {kind} is unusable") from exc
        except Exception as exc:  # aiortc's InvalidStateError, OperationError
            raise CallFailed(CallFailure.BAD_SDP, f"the other side's {kind}: {exc}") from exc

    def _local_sdp(self) -> str:
        description = self._pc.localDescription
        assert description is not None
        if self._relay_only and not has_relay_candidate(description.sdp):
            raise CallFailed(
                CallFailure.NO_RELAY,
                "the TURN relay gave no address (it refused the credentials or cannot be reached)",
            )
        return with_opus_parameters(
            description.sdp,
            {
                "minptime": 10,
                "useinbandfec": 1,
                "stereo": 0,
                "sprop-stereo": 0,
                "maxaveragebitrate": self._own_cap,
            },
        )

    def _take_remote(self, sdp: str) -> None:
        """Read what the other side's SDP says before aiortc takes it."""
        if opus_payload_type(sdp) is None:
            raise CallFailed(CallFailure.BAD_SDP, "the other side offers no Opus audio")
        self._expected = [(f.algorithm, f.value) for f in fingerprints(sdp)]
        if not any(algorithm in _DIGESTS for algorithm, _ in self._expected):
            raise CallFailed(CallFailure.BAD_SDP, "the other side's SDP has no usable fingerprint")
        cap = max_average_bitrate(sdp) or self._own_cap
        self._track.configure(max(MIN_BITRATE, min(self._own_cap, cap)))

    # --- connection ----------------------------------------------------------------------

    async def wait_connected(self, timeout: float) -> None:
        """Wait until ICE and DTLS are up and the certificate checks; raises CallFailed."""
        try:
            async with asyncio.timeout(timeout):
                await self._settled.wait()
        except TimeoutError:
            raise CallFailed(
                CallFailure.SETUP_TIMEOUT,
                f"the media did not connect within {timeout:g} s "
                "(no network path between the devices; a TURN relay may help)",
            ) from None
        if self._failure is not None:
            raise self._failure
        if not self._certificate_matches():
            self._failure = _mismatch()
            raise self._failure
        self._connected_at = time.monotonic()
        self._pump = asyncio.get_running_loop().create_task(self._play())

    def _state_changed(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self._settled.set()
        elif state in ("failed", "closed") and not self._closing:
            if self._failure is None:
                self._failure = self._diagnose(state)
            self._settled.set()
            if self._connected_at is not None and self.on_lost is not None:
                lost, self.on_lost = self.on_lost, None
                lost(self._failure)

    def _diagnose(self, state: str) -> CallFailed:
        if self._connected_at is not None:
            how = "failed" if state == "failed" else "was closed by the other side"
            return CallFailed(CallFailure.CONNECTION_LOST, f"the media connection {how}")
        if self._peer_certificate() is not None and not self._certificate_matches():
            return _mismatch()
        return CallFailed(CallFailure.MEDIA_FAILED, "the media connection failed (ICE or DTLS)")

    def _peer_certificate(self) -> x509.Certificate | None:
        """The certificate the other side presented in the DTLS handshake, if it got that far.

        aiortc offers no accessor for it: this reads its transport's OpenSSL connection.
        """
        ssl: Any = getattr(self._transceiver.sender.transport, "_ssl", None)
        if ssl is None:
            return None
        try:
            cert = ssl.get_peer_certificate(as_cryptography=True)
        except Exception:  # no handshake yet, or an older pyOpenSSL
            return None
        return cert if isinstance(cert, x509.Certificate) else None

    def _certificate_matches(self) -> bool:
        """Whether the DTLS peer presented the certificate the signalled SDP names.

        Every fingerprint of a known algorithm must match, as RFC 8122 asks.
        """
        cert = self._peer_certificate()
        if cert is None:
            return False
        checked = 0
        for algorithm, value in self._expected:
            digest = _DIGESTS.get(algorithm)
            if digest is None:
                continue
            if cert.fingerprint(digest()).hex(":").upper() != value:
                return False
            checked += 1
        return checked > 0

    async def _play(self) -> None:
        """Hand the other side's decoded sound to the sink, as mono."""
        track = self._transceiver.receiver.track
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, AudioFrame):
                for mono in resampler.resample(frame):
                    self._sink.write(frame_pcm(mono))

    # --- figures and the end -------------------------------------------------------------

    async def stats(self) -> CallStats:
        """What the media used so far, and the line's quality."""
        report = await self._pc.getStats()
        sent = received = packets_sent = packets_received = lost = remote_lost = 0
        rtt: float | None = None
        for item in report.values():
            kind = getattr(item, "type", "")
            if kind == "transport":
                sent += item.bytesSent + PACKET_OVERHEAD * item.packetsSent
                received += item.bytesReceived + PACKET_OVERHEAD * item.packetsReceived
                packets_sent += item.packetsSent
                packets_received += item.packetsReceived
            elif kind == "inbound-rtp":
                lost += max(0, item.packetsLost)
            elif kind == "remote-inbound-rtp":
                remote_lost += max(0, item.packetsLost)
                rtt = item.roundTripTime
        seconds = 0.0 if self._connected_at is None else time.monotonic() - self._connected_at
        return CallStats(
            bytes_sent=sent,
            bytes_received=received,
            packets_sent=packets_sent,
            packets_received=packets_received,
            packets_lost=lost,
            remote_packets_lost=remote_lost,
            round_trip_time=rtt,
            seconds=seconds,
            send_bitrate=sent * 8 / seconds if seconds else 0.0,
            receive_bitrate=received * 8 / seconds if seconds else 0.0,
            opus_bitrate=self._track.bitrate,
            relayed=self._relayed(),
        )

    def _relayed(self) -> bool:
        """Whether the chosen candidate pair goes through a TURN relay on either side.

        aiortc offers no selected-pair accessor: this reads aioice's nominated pair.
        """
        ice: Any = self._transceiver.sender.transport.transport
        pairs: Any = getattr(getattr(ice, "_connection", None), "_nominated", {})
        pair = pairs.get(1) if isinstance(pairs, dict) else None
        if pair is None:
            return self._relay_only
        kinds = {getattr(pair, "local_candidate", None), getattr(pair, "remote_candidate", None)}
        return any(getattr(c, "type", "") == "relay" for c in kinds)

    async def close(self) -> None:
        """Stop sending and receiving, close the source and the sink."""
        self._closing = True
        self.on_lost = None
        if self._failure is None and not self._settled.is_set():
            self._failure = CallFailed(
                CallFailure.MEDIA_FAILED, "the call ended before it connected"
            )
        self._settled.set()  # wake wait_connected
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        self._track.stop()
        try:
            await self._pc.close()
        except Exception:  # closing a half-negotiated connection must not fail the hang-up
            log.debug("closing the peer connection failed", exc_info=True)
        self._source.close()
        self._sink.close()


def _mismatch() -> CallFailed:
    return CallFailed(
        CallFailure.FINGERPRINT_MISMATCH,
        "the other side's DTLS certificate is not the one in its end-to-end encrypted "
        "call message: someone may be intercepting the media; the call was refused",
    )
