"""The server's side of media: tokens over raw frames, blobs over plain HTTP.

The blobs are random bytes here: the server treats them as opaque ciphertext.
Most tests run `plauder serve` as a process; the ones that move the clock run
a `Server` in the test's own loop with a `ManualClock`.
"""

import asyncio
import contextlib
import hashlib
import io
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil
import pytest

from plauder.clock import ManualClock
from plauder.crypto import AccountKey, Device
from plauder.crypto.media import encrypted_size
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import Error, MediaDownload, MediaToken, MediaUpload
from plauder.server.app import Server
from plauder.server.config import load_config
from tests.conftest import ServerProcess
from tests.integration.test_bad_input import Account, Wire, login, register_raw, rid

ServerFactory = Callable[..., ServerProcess]
NUMBERS = [f"+49151000200{i:02d}" for i in range(20)]
MiB = 1 << 20


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for WebSockets and media requests."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def numbers() -> Iterator[str]:
    """Phone numbers no other test of this module uses."""
    return iter(NUMBERS)


@dataclass
class User:
    """An authenticated device speaking raw frames, and HTTP to the same server."""

    account: Account
    wire: Wire
    session: aiohttp.ClientSession
    url: str

    async def token(self, frame: MediaUpload | MediaDownload) -> MediaToken:
        """A request that must answer a token."""
        answer = await self.wire.request(frame)
        assert isinstance(answer, MediaToken), answer
        return answer

    async def error(self, frame: MediaUpload | MediaDownload) -> str:
        """A request that must fail; its error code."""
        answer = await self.wire.request(frame)
        assert isinstance(answer, Error), answer
        return answer.code

    async def reserve(self, size: int) -> MediaToken:
        """A new upload of `size` bytes."""
        return await self.token(MediaUpload(id=rid(), size=size))

    async def download_token(self, media: str) -> MediaToken:
        """A token to read a complete blob."""
        return await self.token(MediaDownload(id=rid(), media=media))

    async def put(
        self, media: str, token: str, body: Any, offset: int = 0, **headers: str
    ) -> tuple[int, dict[str, Any]]:
        """PUT a body at an offset: (status, JSON answer)."""
        headers = {"Authorization": f"Bearer {token}", "Upload-Offset": str(offset), **headers}
        if isinstance(body, bytes):
            body = io.BytesIO(body)  # aiohttp warns about large bytes bodies
        async with self.session.put(f"{self.url}/media/{media}", data=body, headers=headers) as r:
            return r.status, await r.json()

    async def upload(self, data: bytes) -> str:
        """Reserve and upload a blob in one go; its id."""
        tok = await self.reserve(len(data))
        assert await self.put(tok.media, tok.token, data) == (
            200,
            {"offset": len(data), "complete": True},
        )
        return tok.media

    async def head(self, media: str, token: str) -> tuple[int, int | None]:
        """(status, Upload-Offset) of an upload."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.head(f"{self.url}/media/{media}", headers=headers) as r:
            offset = r.headers.get("Upload-Offset")
            return r.status, None if offset is None else int(offset)

    async def get(
        self, media: str, token: str, range_: str = ""
    ) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
        """GET a blob: (status, body, headers)."""
        headers = {"Authorization": f"Bearer {token}"}
        if range_:
            headers["Range"] = range_
        async with self.session.get(f"{self.url}/media/{media}", headers=headers) as r:
            return r.status, await r.read(), r.headers

    async def fetch(self, media: str) -> bytes:
        """Ask for a download token and read the whole blob."""
        tok = await self.download_token(media)
        status, body, _ = await self.get(media, tok.token)
        assert status == 200, body
        return body


class At:
    """Where a server in this process listens (what Wire and login need)."""

    def __init__(self, url: str) -> None:
        self.url = url


async def user(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> User:
    """A newly registered account, logged in."""
    account = await register_raw(session, server, next(numbers))
    wire, _ = await login(session, server, account, receive=False)
    return User(account, wire, session, server.url)


async def local_user(session: aiohttp.ClientSession, server: Server, number: str) -> User:
    """An account registered straight in an in-process server's store, logged in."""
    account_key, device = AccountKey.generate(), Device.create()
    keys = account_key.sign_device(device.identity_key, device.signing_key, 1)
    reg = await server.store.register(
        number, account_key.public_key, keys, [], None, server.clock.now_ms()
    )
    account = Account(number, account_key, device, reg.device_id)
    at = At(f"http://127.0.0.1:{server.port}")
    wire, _ = await login(session, at, account, receive=False)  # type: ignore[arg-type]
    return User(account, wire, session, at.url)


async def cut_put(url: str, media: str, token: str, data: bytes, sent: int) -> None:
    """A PUT announcing all of `data` whose connection is closed after `sent` bytes."""
    where = urlsplit(url)
    _, writer = await asyncio.open_connection(where.hostname, where.port)
    head = (
        f"PUT /media/{media} HTTP/1.1\r\nHost: {where.netloc}\r\n"
        f"Authorization: Bearer {token}\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode() + data[:sent])
    await writer.drain()
    # bytes the server has not read yet when the connection drops are lost (the offset
    # it reports stays true); let it read these before the drop
    await asyncio.sleep(0.5)
    writer.close()
    await writer.wait_closed()


def blob_files(media_dir: Path) -> set[str]:
    """Names of every upload and blob file under a media folder."""
    return {p.name for p in media_dir.rglob("*") if p.is_file()}


# --- uploads and downloads -------------------------------------------------------------


async def test_upload_in_one_go_and_download_identical_bytes(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> None:
    alice = await user(session, server, numbers)
    bob = await user(session, server, numbers)
    data = secrets.token_bytes(3 * MiB + 123)
    tok = await alice.reserve(len(data))
    assert re.fullmatch(r"[0-9a-f]{32}", tok.media)
    assert (tok.size, tok.offset) == (len(data), 0)
    assert tok.expires > int(time.time() * 1000) + 500_000  # ten minutes by default

    assert await alice.put(tok.media, tok.token, data) == (
        200,
        {"offset": len(data), "complete": True},
    )
    assert await bob.fetch(tok.media) == data  # any account may read it by its id
    assert await alice.fetch(tok.media) == data

    welcome = await (await Wire.open(session, server)).hello()
    assert welcome.limits.max_media_bytes == 100 * MiB
    async with session.get(f"{server.url}/metrics") as r:
        metrics = await r.text()
    assert f"plauder_media_bytes_uploaded {len(data)}" in metrics
    assert f"plauder_media_bytes_downloaded {2 * len(data)}" in metrics
    assert "plauder_media_blobs_stored 1" in metrics
    rows = server.sql("SELECT size, completed IS NOT NULL FROM media WHERE id = ?", tok.media)
    assert rows == [(len(data), 1)] or rows == [(len(data), True)]


async def test_an_upload_cut_at_60_percent_resumes_and_a_download_resumes_by_range(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> None:
    alice = await user(session, server, numbers)
    data = secrets.token_bytes(2 * MiB + 7)
    cut = len(data) * 6 // 10
    tok = await alice.reserve(len(data))
    await cut_put(server.url, tok.media, tok.token, data, cut)

    # what arrived before the connection dropped is kept, and HEAD says how much
    async with asyncio.timeout(10):
        while (await alice.head(tok.media, tok.token))[1] != cut:
            await asyncio.sleep(0.02)
    # a new token for the same upload tells the same offset
    again = await alice.token(MediaUpload(id=rid(), size=len(data), media=tok.media))
    assert (again.media, again.offset, again.size) == (tok.media, cut, len(data))
    status, answer = await alice.put(tok.media, again.token, data[cut:], offset=cut)
    assert (status, answer) == (200, {"offset": len(data), "complete": True})
    # a complete upload asked for again: its offset is its size, and a repeat PUT is harmless
    done = await alice.token(MediaUpload(id=rid(), size=len(data), media=tok.media))
    assert done.offset == len(data)
    assert await alice.put(tok.media, done.token, b"", offset=len(data)) == (200, answer)
    assert await alice.head(tok.media, done.token) == (200, len(data))

    get = await alice.download_token(tok.media)
    status, body, headers = await alice.get(tok.media, get.token)
    assert (status, body, headers["Accept-Ranges"]) == (200, data, "bytes")
    start = len(data) // 3  # a download cut there resumes from it
    status, body, headers = await alice.get(tok.media, get.token, f"bytes={start}-")
    assert (status, body) == (206, data[start:])
    assert headers["Content-Range"] == f"bytes {start}-{len(data) - 1}/{len(data)}"
    assert int(headers["Content-Length"]) == len(data) - start
    status, body, _ = await alice.get(tok.media, get.token, "bytes=10-19")
    assert (status, body) == (206, data[10:20])
    status, _, headers = await alice.get(tok.media, get.token, f"bytes={len(data)}-")
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")


async def test_upload_body_in_several_puts(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> None:
    alice = await user(session, server, numbers)
    data = secrets.token_bytes(100_000)
    tok = await alice.reserve(len(data))
    for start in range(0, len(data), 30_000):
        part = data[start : start + 30_000]
        status, answer = await alice.put(tok.media, tok.token, part, offset=start)
        assert status == 200
        assert answer == {"offset": start + len(part), "complete": start + len(part) == len(data)}
    assert await alice.fetch(tok.media) == data


# --- limits ----------------------------------------------------------------------------


async def test_sizes_above_the_limits_are_refused_before_any_byte(
    session: aiohttp.ClientSession, server_factory: ServerFactory, numbers: Iterator[str]
) -> None:
    server = server_factory(max_media_bytes=1000)
    welcome = await (await Wire.open(session, server)).hello()
    assert welcome.limits.max_media_bytes == 1000  # announced
    alice = await user(session, server, numbers)
    blob = encrypted_size(1000)  # the limit is the file's: its blob's header and tag on top
    assert blob == 1041
    assert await alice.error(MediaUpload(id=rid(), size=blob + 1)) == ErrorCode.MEDIA_TOO_LARGE
    assert await alice.error(MediaUpload(id=rid(), size=0)) == ErrorCode.INVALID_REQUEST
    assert await alice.error(MediaUpload(id=rid(), size=-5)) == ErrorCode.INVALID_REQUEST
    assert server.sql("SELECT count(*) FROM media") == [(0,)]

    tok = await alice.reserve(blob)
    status, answer = await alice.put(tok.media, tok.token, b"x" * (blob + 1))  # Content-Length
    assert (status, answer["code"]) == (413, ErrorCode.MEDIA_TOO_LARGE)
    assert await alice.head(tok.media, tok.token) == (200, 0)

    # with `Expect: 100-continue` the refusal comes before the body is sent
    headers = {"Authorization": f"Bearer {tok.token}", "Upload-Offset": "0"}
    async with session.put(
        f"{server.url}/media/{tok.media}", data=b"y" * 5000, headers=headers, expect100=True
    ) as r:
        assert (r.status, (await r.json())["code"]) == (413, ErrorCode.MEDIA_TOO_LARGE)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(3):
            yield b"z" * 400
            await asyncio.sleep(0.05)

    status, answer = await alice.put(tok.media, tok.token, chunked())
    assert (status, answer["code"]) == (413, ErrorCode.MEDIA_TOO_LARGE)
    held = answer["offset"]
    assert held == 800  # what fitted was kept
    assert await alice.head(tok.media, tok.token) == (200, held)
    status, answer = await alice.put(tok.media, tok.token, b"z" * (blob - held), offset=held)
    assert (status, answer) == (200, {"offset": blob, "complete": True})
    assert await alice.fetch(tok.media) == b"z" * blob
    # nothing more goes into a complete blob
    status, answer = await alice.put(tok.media, tok.token, b"more", offset=blob)
    assert (status, answer["code"]) == (413, ErrorCode.MEDIA_TOO_LARGE)


async def test_quota_and_upload_rate_per_account(
    session: aiohttp.ClientSession, server_factory: ServerFactory, numbers: Iterator[str]
) -> None:
    server = server_factory(media_quota_bytes=1000, media_uploads_per_hour=3)
    alice = await user(session, server, numbers)
    bob = await user(session, server, numbers)
    await alice.reserve(400)  # reserved counts, complete or not
    await alice.reserve(400)
    assert await alice.error(MediaUpload(id=rid(), size=300)) == ErrorCode.QUOTA_EXCEEDED
    await alice.reserve(100)
    assert await alice.error(MediaUpload(id=rid(), size=50)) == ErrorCode.RATE_LIMITED
    await bob.reserve(1000)  # another account has its own
    assert await bob.error(MediaUpload(id=rid(), size=1)) == ErrorCode.QUOTA_EXCEEDED


# --- offsets and tokens ----------------------------------------------------------------


async def test_wrong_offsets_and_bad_tokens_are_refused(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> None:
    alice = await user(session, server, numbers)
    bob = await user(session, server, numbers)
    data = secrets.token_bytes(5000)
    tok = await alice.reserve(len(data))
    other = await alice.reserve(len(data))

    assert await alice.put(tok.media, tok.token, data[:1000]) == (
        200,
        {"offset": 1000, "complete": False},
    )
    for wrong in (0, 999, 1001):
        status, answer = await alice.put(tok.media, tok.token, data[wrong:], offset=wrong)
        assert (status, answer["code"], answer["offset"]) == (409, "invalid_request", 1000)
    async with session.put(
        f"{server.url}/media/{tok.media}",
        data=b"",
        headers={"Authorization": f"Bearer {tok.token}", "Upload-Offset": "ten"},
    ) as r:
        assert (r.status, (await r.json())["code"]) == (400, ErrorCode.INVALID_REQUEST)

    def flipped(token: str) -> str:
        last = "A" if token[-1] != "A" else "B"
        return token[:-1] + last

    expires, holder, mac = tok.token.split(".")
    for forged in (
        flipped(tok.token),
        f"{int(expires) + 10_000}.{holder}.{mac}",  # a later end
        f"{expires}.{bob.account.device_id + 100}.{mac}",  # another holder
        other.token,  # another blob's
        "",
        "Bearer",
        "x" * 5000,
        "ä.ö.ü",
    ):
        status, answer = await alice.put(tok.media, forged, data[1000:], offset=1000)
        assert (status, answer["code"]) == (401, ErrorCode.INVALID_TOKEN), forged
        assert (await alice.head(tok.media, forged))[0] == 401
    async with session.put(f"{server.url}/media/{tok.media}", data=b"x") as r:
        assert (r.status, (await r.json())["code"]) == (401, ErrorCode.INVALID_TOKEN)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")

    # an unfinished upload cannot be downloaded, nor resumed by another device
    assert await alice.error(MediaDownload(id=rid(), media=tok.media)) == ErrorCode.UNKNOWN_MEDIA
    resume = MediaUpload(id=rid(), size=len(data), media=tok.media)
    assert await bob.error(resume) == ErrorCode.UNKNOWN_MEDIA
    for media in ("", "zz", "0" * 32, tok.media.upper()):
        assert await alice.error(MediaDownload(id=rid(), media=media)) == ErrorCode.UNKNOWN_MEDIA
    status, _ = await alice.put(tok.media, tok.token, data[1000:], offset=1000)
    assert status == 200

    # get and put tokens do not stand in for each other
    get = await bob.download_token(tok.media)
    status, answer = await alice.put(tok.media, get.token, b"", offset=len(data))
    assert (status, answer["code"]) == (401, ErrorCode.INVALID_TOKEN)
    assert (await alice.get(tok.media, tok.token))[0] == 401
    assert (await alice.get(other.media, get.token))[0] == 401
    assert (await alice.get("not-an-id", get.token))[0] == 404
    assert (await alice.get(tok.media, get.token))[1] == data


async def test_tokens_expire(
    session: aiohttp.ClientSession, server_factory: ServerFactory, numbers: Iterator[str]
) -> None:
    server = server_factory(media_token_seconds=1)
    alice = await user(session, server, numbers)
    tok = await alice.reserve(10)
    assert tok.expires - int(time.time() * 1000) <= 1000
    await asyncio.sleep(1.2)
    status, answer = await alice.put(tok.media, tok.token, b"0123456789")
    assert (status, answer["code"]) == (401, ErrorCode.INVALID_TOKEN)
    fresh = await alice.token(MediaUpload(id=rid(), size=10, media=tok.media))
    assert (await alice.put(tok.media, fresh.token, b"0123456789"))[0] == 200


# --- expiry, with the clock moved (a server in this process) ---------------------------


@contextlib.asynccontextmanager
async def in_process(
    data: Path, clock: ManualClock, options: dict[str, str]
) -> AsyncIterator[Server]:
    """A server in the test's loop, on a free port and the test's clock; stopped at the end."""
    server = Server(load_config({"data": str(data), "port": "0", **options}, env={}), clock=clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def local(
    tmp_path: Path, backend_options: Callable[[str], dict[str, str]]
) -> AsyncIterator[tuple[Server, ManualClock]]:
    """A server in the test's loop on a clock the test moves; sweeps only when asked."""
    clock = ManualClock(now_ms=int(time.time() * 1000))
    options = {"media_quota_bytes": "100000", **backend_options("local")}
    async with in_process(tmp_path / "local", clock, options) as server:
        yield server, clock


async def test_expired_blobs_are_unknown_at_once_and_swept_from_disk(
    session: aiohttp.ClientSession, local: tuple[Server, ManualClock]
) -> None:
    server, clock = local
    media_dir = server.config.media_path
    alice = await local_user(session, server, NUMBERS[-1])
    bob = await local_user(session, server, NUMBERS[-2])
    data = secrets.token_bytes(50_000)
    kept = await alice.upload(data)
    unfinished = await alice.reserve(len(data))
    assert (await alice.put(unfinished.media, unfinished.token, data[:100]))[0] == 200
    stray = secrets.token_hex(16)  # a file no row knows (say, left by a crash)
    (media_dir / "partial" / stray).write_bytes(b"left over")
    assert blob_files(media_dir) == {kept, unfinished.media, stray}
    assert await alice.error(MediaUpload(id=rid(), size=1)) == ErrorCode.QUOTA_EXCEEDED

    clock.advance(600)  # tokens last ten minutes
    status, answer = await alice.put(unfinished.media, unfinished.token, data[100:], offset=100)
    assert (status, answer["code"]) == (401, ErrorCode.INVALID_TOKEN)

    clock.advance(2 * 86_400)  # an unfinished upload is given up after a day
    resume = MediaUpload(id=rid(), size=len(data), media=unfinished.media)
    assert await alice.error(resume) == ErrorCode.UNKNOWN_MEDIA
    await alice.reserve(len(data))  # its quota is free again, swept or not
    assert await server.media.sweep() == 1
    assert blob_files(media_dir) == {kept}
    assert await bob.fetch(kept) == data

    get = await bob.download_token(kept)
    clock.advance(28 * 86_400 + 1)  # 30 days after its upload
    assert await bob.error(MediaDownload(id=rid(), media=kept)) == ErrorCode.UNKNOWN_MEDIA
    assert blob_files(media_dir) == {kept}  # not swept yet, and already unknown
    assert (await bob.get(kept, get.token))[0] in (401, 404)
    assert await server.media.sweep() == 2  # the blob and the upload reserved after a day
    assert blob_files(media_dir) == set()
    assert await server.store.run(_count_media) == 0
    await alice.reserve(100_000)


async def _count_media(tx: Any) -> int:
    row = await tx.fetchone("SELECT count(*) FROM media")
    return int(row[0])


async def test_the_periodic_sweep_deletes_expired_blobs(
    session: aiohttp.ClientSession,
    tmp_path: Path,
    backend_options: Callable[[str], dict[str, str]],
) -> None:
    clock = ManualClock(now_ms=int(time.time() * 1000))
    options = {
        "sweep_interval_seconds": "0.1",
        "media_retention_days": "1",
        **backend_options("swept"),
    }
    async with in_process(tmp_path / "swept", clock, options) as server:
        alice = await local_user(session, server, NUMBERS[-3])
        media = await alice.upload(b"bald weg")
        assert blob_files(server.config.media_path) == {media}
        clock.advance(86_400)
        async with asyncio.timeout(10):
            while blob_files(server.config.media_path):
                await asyncio.sleep(0.05)
        assert await alice.error(MediaDownload(id=rid(), media=media)) == ErrorCode.UNKNOWN_MEDIA
        await alice.wire.close()


# --- durability ------------------------------------------------------------------------


async def test_a_completed_upload_survives_kill_9(
    session: aiohttp.ClientSession, server: ServerProcess, numbers: Iterator[str]
) -> None:
    alice = await user(session, server, numbers)
    data = secrets.token_bytes(4 * MiB + 1)
    unfinished = secrets.token_bytes(1 * MiB)
    part = await alice.reserve(len(unfinished))
    assert (await alice.put(part.media, part.token, unfinished[:300_000]))[0] == 200
    media = await alice.upload(data)

    server.kill()  # right after the answer: no graceful anything
    server.start()

    bob = await user(session, server, numbers)
    assert await bob.fetch(media) == data
    assert server.sql("SELECT count(*) FROM media WHERE completed IS NOT NULL") == [(1,)]
    # the unfinished upload kept what its answer said, and resumes there
    wire, _ = await login(session, server, alice.account, receive=False)
    alice = User(alice.account, wire, session, server.url)
    resume = await alice.token(MediaUpload(id=rid(), size=len(unfinished), media=part.media))
    assert resume.offset == 300_000
    status, answer = await alice.put(part.media, resume.token, unfinished[300_000:], offset=300_000)
    assert (status, answer["complete"]) == (200, True)
    assert await bob.fetch(part.media) == unfinished


# --- big blobs in bounded memory -------------------------------------------------------


def pattern(total: int) -> Iterator[bytes]:
    """`total` bytes of varied data, made one MiB at a time."""
    base = random.Random(5).randbytes(MiB)
    for i, start in enumerate(range(0, total, MiB)):
        yield (i.to_bytes(8, "big") + base[8:])[: total - start]


async def test_a_300_mib_blob_goes_up_and_down_in_bounded_memory(
    session: aiohttp.ClientSession, server_factory: ServerFactory, numbers: Iterator[str]
) -> None:
    total = 300 * MiB
    server = server_factory(max_media_bytes=400 * MiB)
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    alice = await user(session, server, numbers)
    await alice.fetch(await alice.upload(secrets.token_bytes(8 * MiB)))  # warm up
    baseline = proc.memory_info().rss
    peak = baseline

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.02)

    watcher = asyncio.get_running_loop().create_task(watch())
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for chunk in pattern(total):
            sent.update(chunk)
            yield chunk

    try:
        tok = await alice.reserve(total)
        status, answer = await alice.put(
            tok.media, tok.token, body(), **{"Content-Length": str(total)}
        )
        assert (status, answer) == (200, {"offset": total, "complete": True})
        get = await alice.download_token(tok.media)
        received = hashlib.sha256()
        headers = {"Authorization": f"Bearer {get.token}"}
        async with session.get(f"{server.url}/media/{tok.media}", headers=headers) as r:
            assert r.status == 200
            assert r.content_length == total
            async for chunk in r.content.iter_chunked(MiB):
                received.update(chunk)
    finally:
        watcher.cancel()
    assert received.digest() == sent.digest()
    grown = (peak - baseline) / MiB
    assert grown < 64, f"the server's RSS grew by {grown:.1f} MiB"


# --- logs ------------------------------------------------------------------------------


async def test_logs_hold_no_token_no_id_and_no_blob_bytes(
    session: aiohttp.ClientSession, server_factory: ServerFactory, numbers: Iterator[str]
) -> None:
    server = server_factory(log_level="debug")
    alice = await user(session, server, numbers)
    marker = b"PLAUDER-BLOB-MARKER-"
    data = marker * 5000
    tok = await alice.reserve(len(data))
    await cut_put(server.url, tok.media, tok.token, data, len(data) // 2)
    async with asyncio.timeout(10):
        while (await alice.head(tok.media, tok.token))[1] != len(data) // 2:
            await asyncio.sleep(0.02)
    await alice.put(tok.media, tok.token, data, offset=0)  # 409
    await alice.put(tok.media, tok.token + "x", data)  # 401
    status, _ = await alice.put(tok.media, tok.token, data[len(data) // 2 :], len(data) // 2)
    assert status == 200
    get = await alice.download_token(tok.media)
    assert await alice.fetch(tok.media) == data
    await alice.get(tok.media, get.token, "bytes=99999999-")  # 416
    await alice.wire.close()
    server.stop()

    text = server.log_text()
    assert "listening on" in text  # the log is there
    for secret in (tok.token, get.token, tok.token.rsplit(".", 1)[1], tok.media):
        assert secret not in text
    assert marker.decode() not in text
