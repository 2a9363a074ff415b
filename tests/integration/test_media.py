"""Files, photos and voice notes through a real server with the real SDK."""

import array
import asyncio
import itertools
import math
import os
import signal
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import msgspec
import pytest
from PIL import Image

from plauder.client import Attachment, Client, MessageReceived, Queued, ServerError
from plauder.crypto.media import MediaMismatch, MediaTampered, MediaTruncated, encrypted_size
from tests.conftest import ServerProcess
from tests.integration.test_messaging import next_of

MakeClient = Callable[..., Any]
HERE = Path(__file__).parent
GPS_IFD = 0x8825


def photo(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    """A JPEG with a camera model and a GPS position in its EXIF."""
    img = Image.new("RGB", size)
    w, h = size
    img.putdata([((x * 7) % 256, (y * 5) % 256, (x + y) % 256) for y in range(h) for x in range(w)])
    exif = Image.Exif()
    exif[0x0110] = "Kamera 3000"  # Model
    exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    img.save(path, "JPEG", quality=90, exif=exif)
    return path


def tone(path: Path, seconds: float, rate: int = 44100, freq: float = 440.0) -> Path:
    """A stereo WAV: a tone, then silence in its second half."""
    samples = array.array("h")
    n = int(seconds * rate)
    for i in range(n):
        v = int(12000 * math.sin(2 * math.pi * freq * i / rate)) if i < n // 2 else 0
        samples.extend((v, v))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def decoded_ms(path: Path) -> float:
    """The length of an audio file as decoded, in milliseconds."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return 1000 * samples / stream.rate


def pixels(path: Path) -> bytes:
    """An image's decoded RGB pixels."""
    with Image.open(path) as img:
        return img.convert("RGB").tobytes()


def blob_files(server: ServerProcess) -> list[Path]:
    """Every file under the server's media folder."""
    return [p for p in (server.data / "media").rglob("*") if p.is_file()]


def blob_of(server: ServerProcess, media: str) -> Path:
    """The file holding a complete blob."""
    found = [p for p in blob_files(server) if p.name.startswith(media) and "part" not in p.name]
    assert len(found) == 1, found
    return found[0]


async def received_file(client: Client) -> MessageReceived:
    """The next message that carries a file."""
    while True:
        got = await next_of(client, MessageReceived)
        if got.media is not None:
            return got


async def test_a_photo_reaches_a_contact_without_its_gps_position(
    make_client: MakeClient, server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await make_client(), await make_client()
    src = photo(tmp_path / "ekg.jpg")
    with Image.open(src) as img:
        assert GPS_IFD in img.getexif()
    mid = await alice.chat(bob.number).send_file(src, caption="EKG von heute")

    got = await received_file(bob)
    assert got.id == mid and got.body == "EKG von heute" and got.sender == alice.number
    assert got.media is not None
    media = got.media.content
    assert (media.kind, media.mime, media.name) == ("image", "image/jpeg", "ekg.jpg")
    assert (media.width, media.height) == (640, 480)
    assert 0 < len(media.thumbnail) < 16 * 1024
    saved = await got.download(tmp_path / "inbox")
    assert saved == tmp_path / "inbox" / "ekg.jpg"
    assert pixels(saved) == pixels(src)
    with Image.open(saved) as img:
        exif = img.getexif()
        assert GPS_IFD not in exif and 0x0110 not in exif

    # the sender's history shows the file; the receiver's remembers where it went
    assert [e.media.name for e in alice.chat(bob.number).history() if e.media] == ["ekg.jpg"]
    entry = bob.history(alice.number)[-1]
    assert entry.media is not None and entry.media_path == str(saved)


async def test_the_server_holds_no_byte_of_the_file_in_clear(
    make_client: MakeClient, server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await make_client(), await make_client()
    src = tmp_path / "bericht.pdf"
    plain = os.urandom(300_000)
    src.write_bytes(plain)
    await alice.send_file(bob.number, src)
    got = await received_file(bob)
    assert got.media is not None
    stored = blob_of(server, got.media.content.media).read_bytes()
    assert len(stored) == got.media.content.enc_size
    for at in range(0, len(plain) - 32, 9973):
        assert plain[at : at + 32] not in stored
    everything = b"".join(p.read_bytes() for p in server.data.rglob("*") if p.is_file())
    assert plain[1000:1032] not in everything
    assert (await got.download(tmp_path)).read_bytes() == plain


async def test_a_voice_note_keeps_its_length(make_client: MakeClient, tmp_path: Path) -> None:
    alice, bob = await make_client(), await make_client()
    src = tone(tmp_path / "notiz.wav", 3.7)
    await alice.chat(bob.number).send_voice(src)
    got = await received_file(bob)
    assert got.media is not None
    media = got.media.content
    assert (media.kind, media.mime) == ("voice", "audio/ogg")
    assert abs(media.duration_ms - 3700) <= 50
    assert len(media.waveform) == 64
    assert min(media.waveform[:28]) > max(media.waveform[36:])  # loud, then silent
    saved = await got.download(tmp_path / "in")
    assert abs(decoded_ms(saved) - 3700) <= 50
    with av.open(str(saved)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.channels) == ("opus", 1)


async def test_a_photo_and_a_voice_note_in_a_group(make_client: MakeClient, tmp_path: Path) -> None:
    alice, bob, carol = [await make_client() for _ in range(3)]
    group = await alice.groups.create("Station", [bob.number, carol.number])
    src = photo(tmp_path / "bild.jpg", (320, 200))
    await group.send_file(src)
    await group.send_voice(tone(tmp_path / "v.wav", 1.5))
    for member in (bob, carol):
        first, second = await received_file(member), await received_file(member)
        assert (first.group, first.group_name) == (group.gid, "Station")
        assert first.media is not None and second.media is not None
        assert (first.media.kind, second.media.kind) == ("image", "voice")
        saved = await first.download(tmp_path / member.number)
        assert pixels(saved) == pixels(src)
        voice = await second.download(tmp_path / member.number)
        assert abs(decoded_ms(voice) - 1500) <= 50


async def _sent_blob(
    alice: Client, bob: Client, tmp_path: Path, size: int = 200_000
) -> tuple[MessageReceived, bytes]:
    plain = os.urandom(size)
    src = tmp_path / f"f{len(os.listdir(tmp_path))}.bin"
    src.write_bytes(plain)
    await alice.send_file(bob.number, src)
    return await received_file(bob), plain


def _with(attachment: Attachment, **changes: Any) -> Attachment:
    """The same attachment with some of its description changed."""
    content = msgspec.structs.replace(attachment.content, **changes)
    return Attachment(attachment.sender, attachment.message_id, content, attachment._service)


async def test_tampered_truncated_swapped_and_wrongly_keyed_blobs_are_refused(
    make_client: MakeClient, server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await make_client(), await make_client()
    one, _ = await _sent_blob(alice, bob, tmp_path)
    two, _ = await _sent_blob(alice, bob, tmp_path)
    assert one.media is not None and two.media is not None
    out = tmp_path / "out"
    out.mkdir()

    # a wrong key: the first chunk fails to authenticate
    wrong = _with(one.media, key="A" * 43 + "=")
    with pytest.raises(MediaTampered):
        await wrong.download(out)
    # a swapped media id: another blob, another key
    with pytest.raises((MediaTampered, MediaMismatch)):
        await _with(one.media, media=two.media.content.media).download(out)

    # a byte flipped on the server's disk
    path = blob_of(server, one.media.content.media)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(MediaTampered):
        await one.download(out)

    # a blob cut short on the server's disk, announced as the full size
    path = blob_of(server, two.media.content.media)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(MediaTruncated):
        await two.download(out)
    assert list(out.iterdir()) == []  # nothing kept of any refused file


def cut_once(seen: list[int]) -> Callable[[int, int], None]:
    """A progress callback that records progress and breaks the transfer once, at 60%."""
    cut = False

    def progress(done: int, total: int) -> None:
        nonlocal cut
        seen.append(done)
        if not cut and done >= total * 0.6:
            cut = True
            raise ConnectionResetError("cut at 60%")

    return progress


async def test_an_interrupted_upload_and_download_resume(
    make_client: MakeClient, tmp_path: Path
) -> None:
    alice, bob = await make_client(), await make_client()
    plain = os.urandom(3 * 1024 * 1024)
    src = tmp_path / "gross.bin"
    src.write_bytes(plain)

    seen: list[int] = []
    await alice.send_file(bob.number, src, progress=cut_once(seen))
    restarts = [b for a, b in itertools.pairwise(seen) if b <= a]
    assert len(restarts) == 1  # one new attempt...
    assert restarts[0] >= 0.5 * len(plain)  # ...which began about where the first stopped

    got = await received_file(bob)
    seen.clear()
    out = await got.download(tmp_path / "in", progress=cut_once(seen))
    assert out.read_bytes() == plain
    assert seen == sorted(seen) and seen[-1] == got.media.content.enc_size  # never from zero


async def test_size_limit_and_quota_are_refused_before_the_upload(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    from tests.conftest import register

    server = server_factory(max_media_bytes=str(1024 * 1024), media_quota_bytes=str(1536 * 1024))
    alice = await register(server, tmp_path / "p", "+4915100000081")
    bob = await register(server, tmp_path / "p", "+4915100000082")
    await alice.start()
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(1024 * 1024 + 1))
        with pytest.raises(ServerError) as exc:
            await alice.send_file(bob.number, big)
        assert exc.value.code == "media_too_large"
        exact = tmp_path / "exact.bin"  # the limit is the file's size, not its blob's
        exact.write_bytes(os.urandom(1024 * 1024))
        await alice.send_file(bob.number, exact)
        half = tmp_path / "half.bin"
        half.write_bytes(os.urandom(400 * 1024))
        await alice.send_file(bob.number, half)  # 1.4 MiB of 1.5 MiB used
        with pytest.raises(ServerError) as exc:
            await alice.send_file(bob.number, half)
        assert exc.value.code == "quota_exceeded"
    finally:
        await alice.close()
        await bob.close()


async def test_a_file_cut_off_by_a_crash_or_sent_offline_goes_out_later(
    make_client: MakeClient, server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await make_client(), await make_client()
    await alice.send_text(bob.number, "gleich kommt ein Film")
    await alice.close()

    # the sending process dies at 60% of the upload: the file goes on from the server's offset
    film = tmp_path / "film.bin"
    plain = os.urandom(24 * 1024 * 1024)
    film.write_bytes(plain)
    sender = [str(HERE / "crashy_sender.py"), str(alice.profile_dir), alice.number]
    crash = subprocess.run(
        [sys.executable, *sender, bob.number, str(film), "0.6"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stdout + crash.stderr
    _, mid, blob_id = crash.stdout.split()
    held = (server.data / "media" / "partial" / blob_id).stat().st_size
    assert 0 < held < encrypted_size(len(plain))

    # a copy staged by a send that died before encrypting is cleaned up too
    orphan = alice.profile_dir / "media" / "outgoing" / f"{'ab' * 16}.stage"
    orphan.mkdir()
    (orphan / "notiz.ogg").write_bytes(b"OggS staged voice note")
    alice = Client(alice.profile_dir, alice.number)
    try:
        assert alice.history(bob.number)[-1].status == "pending"  # shown while it waits
        await alice.start()
        got = await received_file(bob)
        assert got.id == mid and got.media is not None
        assert got.media.content.media == blob_id  # the same upload, continued
        assert (await got.download(tmp_path / "in")).read_bytes() == plain
        async with asyncio.timeout(10):
            while alice.history(bob.number)[-1].status == "pending":
                await asyncio.sleep(0.02)
        assert not list((alice.profile_dir / "media" / "outgoing").iterdir())

        # sent while the server is down: queued, and out once it is back
        server.kill()
        src = photo(tmp_path / "station.jpg")
        with pytest.raises(Queued) as queued:
            await alice.chat(bob.number).send_file(src, caption="von unterwegs", timeout=1.0)
        entry = alice.history(bob.number)[-1]
        assert entry.id == queued.value.message_id
        assert (entry.status, entry.body, entry.media is not None) == (
            "pending",
            "von unterwegs",
            True,
        )
        server.start()
        got = await received_file(bob)
        assert got.body == "von unterwegs" and got.id == entry.id
        assert pixels(await got.download(tmp_path / "in")) == pixels(src)
    finally:
        await alice.close()
