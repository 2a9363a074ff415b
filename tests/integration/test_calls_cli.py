"""Calls on the command line, headless with files, as the README shows them."""

import importlib.util
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.conftest import ServerProcess
from tests.integration.test_calls import dominant
from tests.integration.test_cli import lines, plauder
from tests.services import Coturn

A, B = "+4915100000001", "+4915100000002"


def _register(cfg: Path, server: ServerProcess, *numbers: str) -> None:
    for number in numbers:
        plauder(cfg, "-a", number, "register", "--server", server.url)
        plauder(cfg, "-a", number, "verify", server.code_for(number))


def wav_tone(path: Path, frequency: float, seconds: float, rate: int = 44100) -> Path:
    """A mono WAV holding a tone."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def heard(path: Path) -> float:
    """The strongest frequency of a recorded call (mono, 48 kHz)."""
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate()) == (1, 48000)
        return dominant(w.readframes(w.getnframes()))


def background(cfg: Path, *args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [sys.executable, "-m", "plauder.cli", "--config-dir", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_call_auto_answer_and_the_call_log_through_the_relay(
    server_factory: Callable[..., ServerProcess], coturn: Coturn, tmp_path: Path
) -> None:
    server = server_factory(**coturn.server_options())
    cfg = tmp_path / "profiles"
    _register(cfg, server, A, B)
    greeting = wav_tone(tmp_path / "greeting.wav", 440, 8)
    answer = wav_tone(tmp_path / "answer.wav", 660, 2)  # looped for as long as the call lasts
    calls_dir = tmp_path / "calls"
    callee = background(
        cfg,
        "--json",
        "-a",
        B,
        "receive",
        "--timeout",
        "12",
        "--auto-answer",
        "--relay-only",
        "--answer-with",
        str(answer),
        "--record-calls",
        str(calls_dir),
    )
    reply = tmp_path / "reply.wav"
    out = plauder(
        cfg,
        "--json",
        "-a",
        A,
        "call",
        B,
        "--play",
        str(greeting),
        "--record",
        str(reply),
        "--duration",
        "3",
        "--relay-only",
    ).stdout
    events = lines(out)
    states = [e["state"] for e in events if e["type"] == "call_state"]
    assert states == ["outgoing", "ringing", "connecting", "connected", "ended"]
    summary = events[-1]
    assert summary["type"] == "call_summary" and summary["state"] == "ended"
    assert 2.5 < summary["duration"] < 5 and summary["bytes_sent"] > 0
    assert summary["relayed"] is True

    got, errors = callee.communicate(timeout=30)
    assert callee.returncode == 0, errors
    seen = lines(got)
    assert (seen[0]["type"], seen[0]["peer"]) == ("incoming_call", A)
    assert [e["state"] for e in seen if e["type"] == "call_state"][-1] == "ended"
    [recording] = calls_dir.glob("call-*.wav")
    assert abs(heard(recording) - 440) <= 10
    assert abs(heard(reply) - 660) <= 10

    [logged] = lines(plauder(cfg, "--json", "-a", A, "calls").stdout)
    assert (logged["direction"], logged["peer"], logged["state"]) == ("outgoing", B, "ended")
    assert logged["bytes_per_minute"] > 0
    text = plauder(cfg, "-a", B, "calls").stdout
    assert f"← {A}: ended (remote_hangup), 0:0" in text and "/min)" in text and "relayed" in text


def test_reject_from_the_command_line(server: ServerProcess, tmp_path: Path) -> None:
    cfg = tmp_path / "profiles"
    _register(cfg, server, A, B)
    caller = background(cfg, "--json", "-a", A, "call", B, "--tone", "440", "--duration", "5")
    declined = plauder(cfg, "-a", B, "reject", "--wait", "20").stdout
    assert f"declined the call from {A}" in declined
    out, errors = caller.communicate(timeout=30)
    assert caller.returncode == 1, errors
    events = lines(out)
    assert [e["state"] for e in events if e["type"] == "call_state"][-1] == "rejected"
    late = plauder(cfg, "-a", B, "answer", "--tone", "660", "--wait", "0.5", check=False)
    assert late.returncode == 1 and "no call rang within 0.5 s" in late.stderr
    if importlib.util.find_spec("sounddevice") is None:  # no microphone: says what to do
        no_sound = plauder(cfg, "-a", B, "answer", "--wait", "0.5", check=False)
        assert "--play FILE or --tone HZ" in no_sound.stderr
