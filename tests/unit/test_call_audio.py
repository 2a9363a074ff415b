"""Sources and sinks of call audio: tones, files, memory, WAV files, sound devices."""

import array
import asyncio
import math
import sys
import types
import wave
from pathlib import Path
from typing import Any

import pytest

from plauder.client.call_audio import (
    RATE,
    FileSource,
    MemorySink,
    Microphone,
    Silence,
    Speaker,
    Tone,
    WavFile,
    default_sink,
    default_source,
)
from plauder.client.media_errors import AudioUnavailable, UnreadableMedia


def samples(pcm: bytes) -> "array.array[int]":
    return array.array("h", pcm)


async def test_silence_and_tone() -> None:
    assert await Silence().read(960) == bytes(1920)
    tone = Tone(1000, level=0.5)
    first, second = await tone.read(24), await tone.read(24)
    values = samples(first + second)
    assert len(values) == 48
    assert max(values) == round(0.5 * 32767)  # 48 samples: one whole period of 1 kHz
    assert values[12] == round(0.5 * 32767 * math.sin(2 * math.pi * 12 / 48))  # continuous


def write_wav(path: Path, seconds: float, rate: int = 16000, value: int = 1000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(array.array("h", [value] * int(seconds * rate) * 2).tobytes())
    return path


async def test_file_source_resamples_then_gives_silence(tmp_path: Path) -> None:
    source = FileSource(write_wav(tmp_path / "in.wav", 0.1))
    got = b""
    while not source.finished:
        got += await source.read(960)
    values = samples(got)
    assert abs(len(values) - 0.1 * RATE) <= 960  # 100 ms at 48 kHz, then padding
    assert values[2400] == 1000
    assert await source.read(960) == bytes(1920)  # after the end: silence
    source.close()


async def test_file_source_loops(tmp_path: Path) -> None:
    source = FileSource(write_wav(tmp_path / "in.wav", 0.05), loop=True)
    values = samples(await source.read(RATE // 5))  # 200 ms from a 50 ms file
    assert source.finished and min(values[100:-100]) > 900
    source.close()


def test_a_file_without_sound_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("no sound here")
    with pytest.raises(UnreadableMedia):
        FileSource(tmp_path / "x.txt")


def test_memory_and_wav_sinks(tmp_path: Path) -> None:
    memory = MemorySink(max_seconds=0.01)  # 480 samples
    memory.write(bytes(range(200)) * 6)
    assert len(memory.pcm) == 960 and memory.seconds == pytest.approx(0.01)
    wav = WavFile(tmp_path / "out.wav")
    wav.write(array.array("h", [7] * 4800).tobytes())
    wav.close()
    wav.write(b"\0\0")  # after close: ignored
    with wave.open(str(tmp_path / "out.wav")) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, RATE, 4800)


class FakeStream:
    """What sounddevice's Raw*Stream does, driven by the test."""

    def __init__(self, callback: Any, **kw: Any) -> None:
        self.callback = callback
        self.kw = kw
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def fake_sounddevice(monkeypatch: pytest.MonkeyPatch, devices: bool = True) -> list[FakeStream]:
    streams: list[FakeStream] = []
    module = types.ModuleType("sounddevice")

    class PortAudioError(Exception):
        pass

    def query_devices(device: Any = None, kind: str = "") -> None:
        if not devices:
            raise PortAudioError("Error querying device -1")

    def stream(callback: Any, **kw: Any) -> FakeStream:
        streams.append(FakeStream(callback, **kw))
        return streams[-1]

    module.PortAudioError = PortAudioError  # type: ignore[attr-defined]
    module.query_devices = query_devices  # type: ignore[attr-defined]
    module.RawInputStream = stream  # type: ignore[attr-defined]
    module.RawOutputStream = stream  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    return streams


async def test_microphone_hands_captured_sound_to_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    streams = fake_sounddevice(monkeypatch)
    mic = Microphone()
    reading = asyncio.ensure_future(mic.read(4))
    await asyncio.sleep(0)
    [stream] = streams
    assert stream.started and stream.kw["samplerate"] == RATE and stream.kw["channels"] == 1
    stream.callback(b"\x01\x00" * 3, 3, None, None)  # from PortAudio's thread in real life
    await asyncio.sleep(0.01)
    assert not reading.done()  # 3 of 4 samples
    stream.callback(b"\x02\x00" * 3, 3, None, None)
    assert samples(await reading) == array.array("h", [1, 1, 1, 2])
    mic.close()
    assert stream.closed


def test_speaker_plays_what_came_and_silence_after(monkeypatch: pytest.MonkeyPatch) -> None:
    streams = fake_sounddevice(monkeypatch)
    speaker = Speaker()
    speaker.write(b"\x05\x00" * 2)
    [stream] = streams
    out = bytearray(8)
    stream.callback(out, 4, None, None)
    assert samples(bytes(out)) == array.array("h", [5, 5, 0, 0])
    speaker.write(bytes(RATE * 2 * 2))  # two seconds at once: only the last half second is kept
    assert len(speaker._buffer) == RATE  # bytes: 0.5 s of 16-bit samples
    speaker.close()


def test_without_devices_the_defaults_are_silence_and_nowhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_sounddevice(monkeypatch, devices=False)
    with pytest.raises(AudioUnavailable, match="no sound input device"):
        Microphone()
    assert isinstance(default_source(), Silence)
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed
    with pytest.raises(AudioUnavailable, match="plauder\\[audio\\]"):
        Speaker()
    assert type(default_sink()).__name__ == "Discard"
