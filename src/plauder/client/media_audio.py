"""Voice notes: any sound PyAV reads made into mono Ogg/Opus with a waveform; played or exported.

Playing uses `sounddevice` (the `plauder[audio]` extra), imported only when asked.
"""

import contextlib
import importlib
import math
import operator
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer

from plauder.client.media_errors import AudioUnavailable, UnreadableMedia
from plauder.client.media_video import duration_ms

VOICE_MIME = "audio/ogg"
VOICE_RATE = 48_000  # Opus's own rate
VOICE_BITRATE = 24_000  # bits per second: clear speech
LOW_DATA_BITRATE = 12_000  # still intelligible speech, half the bytes
WAVEFORM_POINTS = 64
WAVEFORM_RANGE_DB = 40  # the quietest point shown above zero, below the loudest
_BLOCK = VOICE_RATE // 100  # loudness is summed per 10 ms
_STEP = 4  # of every 4 samples, one is measured
_SILENCE = 3.0  # RMS (of 32,767) below which a whole note counts as silent: about -80 dBFS


@dataclass(frozen=True, slots=True)
class VoiceNote:
    """What a message says of a voice note."""

    duration_ms: int
    waveform: tuple[int, ...]  # WAVEFORM_POINTS loudness values, 0-255


def encode_voice(src: Path, dst: Path, *, low_data: bool = False) -> VoiceNote:
    """Write the sound of `src` to `dst` as mono 48 kHz Ogg/Opus; its duration and waveform.

    24 kbit/s, or 12 kbit/s with `low_data`. Raises UnreadableMedia if `src`
    has no sound PyAV can decode.
    """
    loudness = _Loudness()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=VOICE_RATE)
    with _open_audio(src) as (container, stream), _output(dst, "ogg") as out:
        opus = out.add_stream("libopus", rate=VOICE_RATE, options={"application": "voip"})
        opus.layout = "mono"
        opus.bit_rate = LOW_DATA_BITRATE if low_data else VOICE_BITRATE
        for frame in _resampled(container, stream, resampler, src):
            loudness.add(frame_pcm(frame))
            out.mux(opus.encode(frame))
        out.mux(opus.encode(None))
    return VoiceNote(
        duration_ms=round(loudness.samples * 1000 / VOICE_RATE),
        waveform=loudness.waveform(WAVEFORM_POINTS),
    )


def pcm_chunks(path: Path, rate: int = VOICE_RATE) -> Generator[bytes, None, None]:
    """The sound of a file as mono 16-bit PCM at `rate`, piece by piece, read as it goes.

    Raises UnreadableMedia (on the first `next`) for a file with no sound to decode.
    """
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    with _open_audio(path) as (container, stream):
        for frame in _resampled(container, stream, resampler, path):
            yield frame_pcm(frame)


def audio_duration_ms(path: Path) -> int:
    """The duration of a sound file in milliseconds, as its container states it."""
    with _open_audio(path) as (container, _):
        return duration_ms(container)


def to_wav(src: Path, dst: Path) -> int:
    """Export a sound (a voice note) as 16-bit PCM WAV at its own rate; its duration in ms."""
    with _open_audio(src) as (container, stream), _output(dst, "wav") as out:
        rate = stream.rate or VOICE_RATE
        layout = _layout(stream)
        pcm = out.add_stream("pcm_s16le", rate=rate)
        pcm.layout = layout
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        samples = 0
        for frame in _resampled(container, stream, resampler, src):
            samples += frame.samples
            out.mux(pcm.encode(frame))
        out.mux(pcm.encode(None))
    return round(samples * 1000 / rate)


def play(path: Path) -> None:
    """Play a sound on the default output device, returning when it has been heard.

    Raises AudioUnavailable without sounddevice, PortAudio or an output device,
    UnreadableMedia for a file with no sound to decode.
    """
    sounddevice = load_sounddevice()
    with _open_audio(path) as (container, stream):
        layout = _layout(stream)
        channels = 1 if layout == "mono" else 2
        resampler = av.AudioResampler(format="s16", layout=layout, rate=VOICE_RATE)
        try:
            sounddevice.query_devices(kind="output")
            output = sounddevice.RawOutputStream(
                samplerate=VOICE_RATE, channels=channels, dtype="int16"
            )
        except sounddevice.PortAudioError as exc:
            raise AudioUnavailable(f"no sound output device: {exc}") from exc
        with output:
            for frame in _resampled(container, stream, resampler, path):
                output.write(frame_pcm(frame))


@contextlib.contextmanager
def _open_audio(path: Path) -> Iterator[tuple[InputContainer, AudioStream]]:
    """A file's container and first audio stream; UnreadableMedia if PyAV cannot open it."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise UnreadableMedia(f"{path.name} cannot be read as sound: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise UnreadableMedia(f"{path.name} has no sound")
        yield container, container.streams.audio[0]


@contextlib.contextmanager
def _output(path: Path, container_format: str) -> Iterator[OutputContainer]:
    """A new output file, deleted again if writing it fails."""
    try:
        with av.open(str(path), "w", format=container_format) as out:
            yield out
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _resampled(
    container: InputContainer, stream: AudioStream, resampler: av.AudioResampler, path: Path
) -> Iterator[AudioFrame]:
    """The stream's frames through the resampler, flushed at the end."""
    try:
        for frame in container.decode(stream):
            yield from resampler.resample(frame)
        yield from resampler.resample(None)
    except av.error.FFmpegError as exc:
        raise UnreadableMedia(f"{path.name} cannot be decoded: {exc}") from exc


def _layout(stream: AudioStream) -> str:
    """mono for a one-channel stream, else stereo."""
    return "mono" if stream.layout.nb_channels == 1 else "stereo"


def frame_pcm(frame: AudioFrame) -> bytes:
    """The interleaved 16-bit samples of a packed s16 frame, without padding."""
    return bytes(frame.planes[0])[: frame.samples * len(frame.layout.channels) * 2]


class _Loudness:
    """Mean squares of mono s16 samples per 10 ms block, made into a waveform at the end.

    Every _STEP-th sample is measured: the loudness of speech is the same, at
    a quarter of the cost in pure Python.
    """

    def __init__(self) -> None:
        self._sums: list[float] = []  # squares of the measured samples, per block
        self._counts: list[int] = []  # samples measured, per block
        self.samples = 0

    def add(self, pcm: bytes) -> None:
        """Take mono s16 samples."""
        values = memoryview(pcm).cast("h")
        pos = 0
        while pos < len(values):
            used = self.samples % _BLOCK
            if used == 0:
                self._sums.append(0.0)
                self._counts.append(0)
            part = values[pos : pos + _BLOCK - used]
            measured = part[::_STEP]
            self._sums[-1] += sum(map(operator.mul, measured, measured))
            self._counts[-1] += len(measured)
            self.samples += len(part)
            pos += len(part)

    def waveform(self, points: int) -> tuple[int, ...]:
        """Loudness of each 1/points of the sound, 0-255 on a dB scale below the loudest."""
        count = len(self._sums)
        if not count:
            return (0,) * points
        rms = []
        for i in range(points):
            first = min(i * count // points, count - 1)
            blocks = slice(first, max(first + 1, (i + 1) * count // points))
            rms.append(math.sqrt(sum(self._sums[blocks]) / max(1, sum(self._counts[blocks]))))
        loudest = max(rms)
        if loudest < _SILENCE:
            return (0,) * points
        return tuple(_level(value, loudest) for value in rms)


def _level(rms: float, loudest: float) -> int:
    """One waveform point: 255 at the loudest, 0 at WAVEFORM_RANGE_DB below it or silence."""
    if rms <= 0:
        return 0
    db = 20 * math.log10(rms / loudest)
    return round(255 * min(1.0, max(0.0, 1 + db / WAVEFORM_RANGE_DB)))


def load_sounddevice(purpose: str = "playing sound") -> Any:
    """The sounddevice module, or AudioUnavailable saying what is missing."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError as exc:
        raise AudioUnavailable(
            f"{purpose} needs the audio extra: pip install 'plauder[audio]'"
        ) from exc
    except OSError as exc:  # sounddevice imports, but the PortAudio library is missing
        raise AudioUnavailable(f"{purpose} needs the PortAudio library: {exc}") from exc
