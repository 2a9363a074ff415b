"""Files and voice notes on the command line, as the README shows them, against a real server."""

import os
import subprocess
import sys
import threading
import wave
from collections.abc import Callable
from pathlib import Path

import psutil
from PIL import Image

from tests.conftest import ServerProcess
from tests.integration.test_cli import lines, plauder
from tests.integration.test_media import GPS_IFD, decoded_ms, photo, pixels, tone

A, B, C = "+4915100000001", "+4915100000002", "+4915100000003"
MiB = 1024 * 1024


def _register(cfg: Path, server: ServerProcess, *numbers: str) -> None:
    for number in numbers:
        plauder(cfg, "-a", number, "register", "--server", server.url)
        plauder(cfg, "-a", number, "verify", server.code_for(number))


def test_photo_document_and_voice_note_tour(server: ServerProcess, tmp_path: Path) -> None:
    cfg = tmp_path / "profiles"
    _register(cfg, server, A, B, C)
    src = photo(tmp_path / "ekg.jpg")
    out = plauder(cfg, "-a", A, "send", "--attach", str(src), "--caption", "EKG von heute", B)
    assert out.stdout.startswith(f"✓ sent to {B}")
    voice = tone(tmp_path / "notiz.wav", 2.0)
    plauder(cfg, "-a", A, "send", "--voice", str(voice), B)

    inbox = tmp_path / "plauder-media"
    got = plauder(cfg, "-a", B, "receive", "--download-dir", str(inbox)).stdout
    assert f"{A}: 🖼 ekg.jpg (image/jpeg, " in got and "640x480" in got
    assert "“EKG von heute”" in got
    assert f"{A}: 🎤 voice note 0:02" in got
    assert f"✓ saved {inbox / 'ekg.jpg'}" in got
    assert pixels(inbox / "ekg.jpg") == pixels(src)
    with Image.open(inbox / "ekg.jpg") as img:
        assert GPS_IFD not in img.getexif()

    history = lines(plauder(cfg, "-a", B, "--json", "history", A).stdout)
    assert [h["media"]["kind"] for h in history] == ["image", "voice"]
    voice_id = history[1]["id"]

    # media get: again, to another place, by a prefix of the id
    again = tmp_path / "again.jpg"
    saved = lines(
        plauder(
            cfg, "-a", B, "--json", "media", "get", history[0]["id"][:10], "--out", str(again)
        ).stdout
    )
    assert saved[0]["path"] == str(again) and pixels(again) == pixels(src)

    # media play on a machine without a sound device: --out converts to WAV
    wav = tmp_path / "back.wav"
    plauder(cfg, "-a", B, "media", "play", voice_id, "--out", str(wav))
    with wave.open(str(wav)) as w:
        assert abs(1000 * w.getnframes() / w.getframerate() - 2000) <= 50
    assert abs(decoded_ms(wav) - 2000) <= 50

    # a document into a group
    gid = lines(
        plauder(
            cfg, "--json", "-a", A, "group", "create", "Station", "--member", B, "--member", C
        ).stdout
    )[0]["group"]
    doc = tmp_path / "bericht.pdf"
    doc.write_bytes(b"%PDF-1.4\n" + os.urandom(5000))
    plauder(cfg, "-a", A, "send", "--attach", str(doc), "--group", "Station")
    got = plauder(cfg, "-a", C, "receive", "--download-dir", str(tmp_path / "c")).stdout
    assert "[Station]" in got and "📎 bericht.pdf (application/pdf, 5.0 kB)" in got
    assert (tmp_path / "c" / "bericht.pdf").read_bytes() == doc.read_bytes()
    assert gid

    # errors are plain
    bad = plauder(cfg, "-a", A, "send", "--attach", str(tmp_path / "nope.jpg"), B, check=False)
    assert bad.returncode == 1 and "nope.jpg is not a readable file" in bad.stderr
    both = plauder(cfg, "-a", A, "send", "-m", "x", "--attach", str(doc), B, check=False)
    assert both.returncode == 1 and "one" in both.stderr


class ServerPeak:
    """The highest resident memory of a process while the block runs (sampled every 20 ms)."""

    def __init__(self, proc: psutil.Process) -> None:
        self._proc = proc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.rss = 0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.rss = max(self.rss, self._proc.memory_info().rss)

    def __enter__(self) -> "ServerPeak":
        self.rss = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _peak_rss(cfg: Path, *args: str) -> int:
    """Run the command line and return its peak resident memory in bytes."""
    errors = cfg / "stderr.txt"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plauder.cli", "--config-dir", str(cfg), *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    killer = threading.Timer(300, proc.kill)  # bounded: a hung transfer fails the test
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    assert proc.returncode == 0, errors.read_text()
    return usage.ru_maxrss * 1024


def test_a_300_mib_file_goes_up_and_down_in_bounded_memory(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(max_media_bytes=str(400 * MiB))
    cfg = tmp_path / "profiles"
    _register(cfg, server, A, B)
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(os.urandom(1000))
    with big.open("wb") as f:
        for _ in range(300):
            f.write(os.urandom(MiB))
    assert server.proc is not None
    server_proc = psutil.Process(server.proc.pid)

    base_up = _peak_rss(cfg, "-a", A, "send", "--attach", str(small), B)
    server_before = server_proc.memory_info().rss
    with ServerPeak(server_proc) as server_peak:
        peak_up = _peak_rss(cfg, "-a", A, "send", "--attach", str(big), B)
        received = lines(plauder(cfg, "-a", B, "--json", "receive").stdout)
        ids = [m["id"] for m in received if m.get("type") == "message"]
        assert len(ids) == 2
        base_down = _peak_rss(cfg, "-a", B, "media", "get", ids[0], "--out", str(tmp_path / "s"))
        out = str(tmp_path / "b.bin")
        peak_down = _peak_rss(cfg, "-a", B, "media", "get", ids[1], "--out", out)

    print(  # shown with -s: the figures behind the bounds
        f"peak RSS for 300 MiB: client up {peak_up / MiB:.0f} MiB "
        f"(+{(peak_up - base_up) / MiB:.1f}), "
        f"down {(peak_down - base_down) / MiB:.1f} MiB, "
        f"server {(server_peak.rss - server_before) / MiB:.1f} MiB"
    )
    assert peak_up - base_up < 64 * MiB
    assert peak_down - base_down < 64 * MiB
    assert server_peak.rss - server_before < 64 * MiB
    with big.open("rb") as a, (tmp_path / "b.bin").open("rb") as b:
        while chunk := a.read(8 * MiB):
            assert chunk == b.read(8 * MiB)
