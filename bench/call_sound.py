"""Sound for the `calls` scenario: a speech-like source, and a sink that times arrivals.

`SpeechLike` is a few seconds of synthetic voice, made once with numpy and
looped: talk spurts of syllables (a voiced sound whose pitch glides between
about 100 and 220 Hz, its harmonics shaped by the formants of a vowel, now and
then a hiss like a fricative) between pauses with a faint noise floor. Opus in
`voip` mode codes it as speech, so the bitrates are those of a conversation,
not of a tone. It costs nothing per read (a slice of bytes), so that the
figures are the call's and not the source's.

`TimingSink` notes when each decoded frame reaches the sink, and whether it is
late: see `TimingSink` and docs/performance.md ("Calls").
"""

import math
import time
from array import array

import numpy as np

from plauder.client.call_audio import RATE, SAMPLE_BYTES

LATE_MS = 60.0  # a frame is late if a playout buffer this deep would have run dry
LOOP_SECONDS = 12.0
_VOWELS = (  # formants F1, F2, F3 (Hz) of a few vowels
    (730, 1090, 2440),
    (530, 1840, 2480),
    (270, 2290, 3010),
    (570, 840, 2410),
    (300, 870, 2240),
    (660, 1720, 2410),
)


def speech_like_pcm(seconds: float = LOOP_SECONDS, seed: int = 7) -> bytes:
    """`seconds` of speech-like mono s16 PCM at 48 kHz (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    out = rng.normal(0.0, 30.0, total)  # the room: about -60 dB of full scale
    t = 0
    while t < total:
        spurt_end = min(total, t + int(rng.uniform(1.0, 2.5) * RATE))
        while t < spurt_end:
            n = min(spurt_end - t, int(rng.uniform(0.12, 0.3) * RATE))
            fricative = rng.random() < 0.2
            syllable = _hiss(rng, n) if fricative else _voiced(rng, n)
            out[t : t + n] += syllable * _envelope(n)
            t += n
        t += int(rng.uniform(0.3, 1.0) * RATE)  # a pause
    out *= 0.5 * 32767 / max(1.0, float(np.abs(out).max()))
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


def _voiced(rng: np.random.Generator, n: int) -> np.ndarray:
    """A vowel: harmonics of a gliding pitch, weighted by resonances at its formants."""
    start, end = rng.uniform(100, 220, 2)
    f0 = np.linspace(start, end, n)
    phase = 2 * math.pi * np.cumsum(f0) / RATE
    formants = _VOWELS[int(rng.integers(len(_VOWELS)))]
    mean_f0 = float(f0.mean())
    wave = np.zeros(n)
    for k in range(1, int(4000 / mean_f0) + 1):
        freq = k * mean_f0
        gain = sum(math.exp(-(((freq - f) / 120.0) ** 2)) for f in formants) + 0.05
        wave += gain / k * np.sin(k * phase)
    return 6000.0 * wave


def _hiss(rng: np.random.Generator, n: int) -> np.ndarray:
    """A fricative: noise with its low frequencies taken out (a first difference)."""
    noise = rng.normal(0.0, 1.0, n + 1)
    return 2500.0 * np.diff(noise)


def _envelope(n: int) -> np.ndarray:
    """Rise and fall of a syllable: raised-cosine edges of up to 30 ms."""
    edge = min(n // 2, int(0.03 * RATE))
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, edge))
    env[:edge] = ramp
    env[n - edge :] = ramp[::-1]
    return env


class SpeechLike:
    """An AudioSource that loops a speech-like recording (see the module's docstring)."""

    _cache: bytes | None = None

    def __init__(self, offset_seconds: float = 0.0) -> None:
        if SpeechLike._cache is None:
            SpeechLike._cache = speech_like_pcm()
        self._pcm = SpeechLike._cache
        # callers start at different places, so that calls do not talk in chorus
        self._pos = int(offset_seconds * RATE) * SAMPLE_BYTES % len(self._pcm)

    async def read(self, samples: int) -> bytes:
        """The next `samples` samples, from the start again at the end."""
        wanted = samples * SAMPLE_BYTES
        out = bytearray()
        while len(out) < wanted:
            piece = self._pcm[self._pos : self._pos + wanted - len(out)]
            out += piece
            self._pos = (self._pos + len(piece)) % len(self._pcm)
        return bytes(out)

    def close(self) -> None:
        """Nothing to release."""


class TimingSink:
    """An AudioSink that drops the sound and times each frame's arrival.

    Lateness is judged against a model playout clock: sound plays at 48,000
    samples per second from the earliest moment the arrivals allow (the
    smallest `arrival - samples before this frame / 48,000` seen so far), and a
    frame is *late* when it arrives more than LATE_MS after its sound was due,
    i.e. when a playout buffer LATE_MS deep would have run dry. After a late
    frame the clock starts again from that frame, as a jitter buffer refills
    after running dry. `mark` starts a new measuring window (the clock goes on).
    """

    def __init__(self) -> None:
        self.samples = 0  # received since the call connected
        self._anchor: float | None = None  # when sample 0 was due, in monotonic seconds
        self._last: float | None = None
        self.lateness_ms = array("d")  # per frame in the window
        self.gaps_ms = array("d")  # time since the previous frame, per frame in the window
        self.late = 0  # frames in the window later than LATE_MS
        self.window_samples = 0

    def write(self, pcm: bytes) -> None:
        """A decoded frame arrived: note when, against when it was due."""
        now = time.monotonic()
        due = now - self.samples / RATE
        if self._anchor is None or due < self._anchor:
            self._anchor = due
        lateness = (due - self._anchor) * 1000
        if lateness > LATE_MS:
            self.late += 1
            self._anchor = due  # the buffer ran dry: playout restarts from this frame
        self.lateness_ms.append(lateness)
        if self._last is not None:
            self.gaps_ms.append((now - self._last) * 1000)
        self._last = now
        n = len(pcm) // SAMPLE_BYTES
        self.samples += n
        self.window_samples += n

    def mark(self) -> None:
        """Start a new measuring window."""
        self.lateness_ms = array("d")
        self.gaps_ms = array("d")
        self.late = 0
        self.window_samples = 0

    def close(self) -> None:
        """Nothing to release."""
