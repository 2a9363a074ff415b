"""Sound for calls: where the voice comes from (sources) and where the other side's goes (sinks).

Every source and sink speaks mono 16-bit little-endian PCM at 48 kHz, as bytes.
A source is read in steps of one packet's samples (20 or 60 ms) and must answer
at once, except a microphone, which waits for its sound; the call paces the
reads in real time. A sink is handed what was decoded, as it arrives.

`sounddevice` (the `plauder[audio]` extra, with PortAudio) is imported only
for a microphone or a speaker; files are read and written with PyAV and `wave`.
"""

import array
import asyncio
import logging
import math
import threading
import wave
from collections.abc import Generator
from pathlib import Path
from typing import Any, Protocol

from plauder.client.media_errors import AudioUnavailable

log = logging.getLogger(__name__)

RATE = 48_000  # samples per second, Opus's own rate
SAMPLE_BYTES = 2  # 16-bit mono
DEVICE_BUFFER_SECONDS = 0.5  # a microphone or speaker keeps at most this much waiting


class AudioSource(Protocol):
    """Sound to send: mono s16 PCM at 48 kHz."""

    async def read(self, samples: int) -> bytes:
        """The next `samples` samples (`2 * samples` bytes)."""
        ...

    def close(self) -> None:
        """Release what the source holds (a file, a device)."""
        ...


class AudioSink(Protocol):
    """Where received sound goes: mono s16 PCM at 48 kHz."""

    def write(self, pcm: bytes) -> None:
        """Take the next decoded samples."""
        ...

    def close(self) -> None:
        """Finish (a file's header) and release what the sink holds."""
        ...


# --- sources ---------------------------------------------------------------------------


class Silence:
    """Nothing to say: zeros."""

    async def read(self, samples: int) -> bytes:
        """`samples` zero samples."""
        return bytes(samples * SAMPLE_BYTES)

    def close(self) -> None:
        """Nothing to release."""


class Tone:
    """A sine wave: `frequency` Hz at `level` of full scale (tests, checking a line)."""

    def __init__(self, frequency: float, level: float = 0.3) -> None:
        self.frequency = frequency
        self._amplitude = max(0.0, min(1.0, level)) * 32767
        self._step = 2 * math.pi * frequency / RATE
        self._n = 0

    async def read(self, samples: int) -> bytes:
        """The next `samples` samples of the wave."""
        start, self._n = self._n, self._n + samples
        values = array.array(
            "h", (round(self._amplitude * math.sin(self._step * i)) for i in range(start, self._n))
        )
        return values.tobytes()

    def close(self) -> None:
        """Nothing to release."""


class FileSource:
    """The sound of a file PyAV can read (WAV, Ogg, MP3, a video's sound...), then silence.

    With `loop`, the file starts again at its end. `finished` tells whether it
    was played to the end once. Raises UnreadableMedia for a file with no sound.
    """

    def __init__(self, path: Path | str, *, loop: bool = False) -> None:
        self.path = Path(path)
        self.loop = loop
        self.finished = False
        self._chunks = self._open()
        self._buffer = bytearray(next(self._chunks, b""))  # fails now for a soundless file

    async def read(self, samples: int) -> bytes:
        """The next `samples` samples of the file; silence past its end."""
        wanted = samples * SAMPLE_BYTES
        while len(self._buffer) < wanted and not (self.finished and not self.loop):
            chunk = next(self._chunks, None)
            if chunk is None:
                self.finished = True
                if not self.loop:
                    break
                self._chunks.close()
                self._chunks = self._open()
                continue
            self._buffer += chunk
        out = bytes(self._buffer[:wanted])
        del self._buffer[:wanted]
        return out + bytes(wanted - len(out))

    def _open(self) -> Generator[bytes, None, None]:
        """The file's sound from its start, in chunks of 16-bit mono PCM."""
        from plauder.client.media_audio import pcm_chunks  # PyAV, loaded on first use

        return pcm_chunks(self.path, RATE)

    def close(self) -> None:
        """Close the file."""
        self._chunks.close()


class _SoundDevice:
    """A sounddevice stream in one direction, opened on first use; at most
    DEVICE_BUFFER_SECONDS of sound wait in its buffer (the oldest goes first).
    """

    def __init__(self, device: int | str | None, kind: str) -> None:
        from plauder.client.media_audio import load_sounddevice

        self._sd = load_sounddevice(f"a sound {kind} device")
        try:
            self._sd.query_devices(device, kind=kind)
        except (self._sd.PortAudioError, ValueError) as exc:
            raise AudioUnavailable(f"no sound {kind} device: {exc}") from exc
        self._device = device
        self._stream: Any = None
        self._buffer = bytearray()

    def _keep_recent(self) -> None:
        excess = len(self._buffer) - int(DEVICE_BUFFER_SECONDS * RATE) * SAMPLE_BYTES
        if excess > 0:
            del self._buffer[:excess]

    def close(self) -> None:
        """Stop the device."""
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class Microphone(_SoundDevice):
    """The default (or a named) input device, through sounddevice.

    Raises AudioUnavailable without sounddevice, PortAudio or an input device.
    """

    def __init__(self, device: int | str | None = None) -> None:
        super().__init__(device, "input")
        self._arrived = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stream = self._sd.RawInputStream(
            samplerate=RATE,
            channels=1,
            dtype="int16",
            device=self._device,
            callback=self._captured,
        )
        self._stream.start()

    def _captured(self, data: Any, frames: int, time: Any, status: Any) -> None:
        """On PortAudio's thread: hand the samples to the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._add, bytes(data))

    def _add(self, pcm: bytes) -> None:
        self._buffer += pcm
        self._keep_recent()  # fell behind: drop the oldest sound
        self._arrived.set()

    async def read(self, samples: int) -> bytes:
        """The next `samples` samples, once the device captured them."""
        if self._stream is None:
            self._open()
        wanted = samples * SAMPLE_BYTES
        while len(self._buffer) < wanted:
            self._arrived.clear()
            await self._arrived.wait()
        out = bytes(self._buffer[:wanted])
        del self._buffer[:wanted]
        return out


# --- sinks -----------------------------------------------------------------------------


class Discard:
    """Received sound goes nowhere."""

    def write(self, pcm: bytes) -> None:
        """Drop the samples."""

    def close(self) -> None:
        """Nothing to release."""


class MemorySink:
    """Received sound kept in memory (`pcm`), at most `max_seconds` of it (the latest)."""

    def __init__(self, max_seconds: float = 600.0) -> None:
        self.pcm = bytearray()
        self._limit = int(max_seconds * RATE) * SAMPLE_BYTES

    def write(self, pcm: bytes) -> None:
        """Keep the samples."""
        self.pcm += pcm
        if len(self.pcm) > self._limit:
            del self.pcm[: len(self.pcm) - self._limit]

    @property
    def seconds(self) -> float:
        """How much sound is kept."""
        return len(self.pcm) / SAMPLE_BYTES / RATE

    def close(self) -> None:
        """Nothing to release: the sound stays readable."""


class WavFile:
    """Received sound written to a WAV file (mono, 16-bit, 48 kHz) as it arrives."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - closed by close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(SAMPLE_BYTES)
        self._wav.setframerate(RATE)
        self._closed = False

    def write(self, pcm: bytes) -> None:
        """Append the samples."""
        if not self._closed:
            self._wav.writeframes(pcm)

    def close(self) -> None:
        """Write the final header and close the file."""
        if not self._closed:
            self._closed = True
            self._wav.close()


class Speaker(_SoundDevice):
    """The default (or a named) output device, through sounddevice.

    A late burst is cut rather than delaying the conversation. Raises
    AudioUnavailable without sounddevice, PortAudio or an output device.
    """

    def __init__(self, device: int | str | None = None) -> None:
        super().__init__(device, "output")
        self._lock = threading.Lock()

    def write(self, pcm: bytes) -> None:
        """Queue the samples for the device."""
        if self._stream is None:
            self._stream = self._sd.RawOutputStream(
                samplerate=RATE,
                channels=1,
                dtype="int16",
                device=self._device,
                callback=self._play,
            )
            self._stream.start()
        with self._lock:
            self._buffer += pcm
            self._keep_recent()

    def _play(self, out: Any, frames: int, time: Any, status: Any) -> None:
        """On PortAudio's thread: fill the device's buffer, with silence if nothing came."""
        wanted = frames * SAMPLE_BYTES
        with self._lock:
            chunk = bytes(self._buffer[:wanted])
            del self._buffer[:wanted]
        out[:] = chunk + bytes(wanted - len(chunk))


def default_source() -> AudioSource:
    """The microphone if there is one, else silence (with a warning in the log)."""
    try:
        return Microphone()
    except AudioUnavailable as exc:
        log.warning("calling without a microphone (%s): sending silence", exc)
        return Silence()


def default_sink() -> AudioSink:
    """The speaker if there is one, else nowhere (with a warning in the log)."""
    try:
        return Speaker()
    except AudioUnavailable as exc:
        log.warning("calling without a speaker (%s): received sound is not played", exc)
        return Discard()
