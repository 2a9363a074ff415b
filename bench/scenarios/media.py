"""Scenario `media`: files through the real SDK, beside a plain HTTP upload of the same bytes.

Two SDK clients (`plauder.client.Client`; A sends, B receives) on one plauder
server, and a plain HTTP file server (`bench/plain_http.py`) in its own process.
For each size a file of random bytes is sent `reps` times. Each repetition times:

- upload: A's `chat(B).send_file(path)`: kind sniffing, encryption into a
  scratch blob, `media_upload`, `PUT /media/<id>`, the Olm message, `sent`;
- download: B's `MessageReceived.download(to=folder)`: `media_download`,
  `GET /media/<id>`, decryption, the checks, the file fsynced and renamed;
- end to end: from A calling `send_file` to B's checked file on disk, B
  downloading as soon as the message arrived (and A's `send_file` returned,
  so that the server's CPU can be split between upload and download);
- plain upload: `PUT` of the same file to the plain server (body streamed to a
  file, fsynced); plain download: `GET` of it into a file, fsynced.

The order of plauder and plain alternates between repetitions. Throughput is in
decimal megabytes (10^6 bytes) of the file per second, the median over the
repetitions. The servers' CPU (each process tree, psutil, in clock ticks of 10
ms) is read before and after each step by the generator, and given per MB over
all repetitions together; the generator's own CPU likewise (`process_time`).
"""

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp
import psutil  # type: ignore[import-untyped]

from bench.accounts import fetch_code, number
from bench.harness import Settings, environment, generators
from bench.plain_http import PlainServer
from bench.server import Snapshot
from bench.stats import median, summarize
from bench.workers import Args, Commands
from plauder.client import Client, MessageReceived
from plauder.client.media_files import inspect
from plauder.crypto.media import encrypted_size
from plauder.server.config import MAX_MEDIA_BYTES

MIB = 1 << 20
MB = 1e6  # throughput in decimal megabytes
PIECE = 256 * 1024  # the plain client's reads and writes
SNIFFS = 3  # times the SDK's kind sniffing is timed apart, per size


def reps_for(size: int) -> int:
    """Default repetitions: 10 for files up to 16 MiB, 3 above."""
    return 10 if size <= 16 * MIB else 3


@dataclass
class MediaParams:
    """Sizes of the media scenario."""

    sizes_mib: list[float] = field(default_factory=lambda: [1.0, 100.0])
    reps: int | None = None  # per size (default: reps_for)
    op_timeout: float = 120.0  # one upload or download

    def sizes(self) -> list[tuple[int, int]]:
        """(bytes, repetitions) per size."""
        out = []
        for mib in self.sizes_mib:
            size = round(mib * MIB)
            out.append((size, self.reps or reps_for(size)))
        return out


def server_options(largest: int) -> dict[str, str]:
    """Media limits that fit the largest file (a 100 MiB file encrypts to a little more)."""
    blob = min(MAX_MEDIA_BYTES, max(200 * MIB, encrypted_size(largest)))
    return {
        "max_media_bytes": str(blob),
        "media_quota_bytes": str(64 * 1024**3),
        "media_uploads_per_hour": "100000",
    }


def _write_random(path: Path, size: int) -> str:
    """A file of `size` random bytes; returns its SHA-256 (blocking)."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(MIB, left))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def _check_file(path: Path, size: int, sha256: str) -> None:
    """Raise if a received file is not the one sent; delete it (blocking)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MIB):
            digest.update(piece)
    got = path.stat().st_size
    path.unlink()
    if got != size or digest.hexdigest() != sha256:
        raise RuntimeError(f"{path.name}: {got} bytes received differ from the {size} sent")


def _sniff_seconds(path: Path) -> float:
    """The SDK's kind sniffing of the file, timed apart: the median of a few (blocking)."""
    times = []
    for _ in range(SNIFFS):
        t0 = time.perf_counter()
        inspect(path)
        times.append(time.perf_counter() - t0)
    return median(times)


class MediaWorker(Commands):
    """Two SDK clients (index 0 sends, 1 receives) and a plain HTTP client, in one process."""

    def __init__(self, spec: Args) -> None:
        self.spec = spec
        self.work = Path(spec["work"])
        self.clients: dict[int, Client] = {}
        self.session: aiohttp.ClientSession | None = None
        self.plain_url = ""
        self.received: dict[str, tuple[int, MessageReceived]] = {}
        self.arrived = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    async def cmd_setup(self, server_url: str, plain_url: str, timeout: float) -> Args:
        """Register both clients, start them, and warm up every path once."""
        async with asyncio.timeout(timeout):
            async with aiohttp.ClientSession() as codes:
                for i in (0, 1):
                    client = Client(self.work / "profiles" / str(i), number(i))
                    self.clients[i] = client
                    await client.request_code([server_url])
                    await client.verify(await fetch_code(codes, self.spec["collector"], number(i)))
                    await client.start()
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_read=60, sock_connect=10)
            )
            self.plain_url = plain_url
            self.reader = asyncio.ensure_future(self._read_events())
            for folder in ("send", "down", "plain"):
                (self.work / folder).mkdir(parents=True, exist_ok=True)
            # the Olm session, HTTP connections and code paths, once each before measuring
            mid = await self.clients[0].send_text(number(1), "hello")
            await self._arrival(mid, timeout)
            size = 64 * 1024
            path = self.work / "send" / "warm-up.bin"
            sha256 = await asyncio.to_thread(_write_random, path, size)
            await self._sdk_once(path, size, sha256, None, timeout)
            await self._plain_once(path, size, sha256, None, timeout)
        return {}

    async def _read_events(self) -> None:
        """Note when each message reaches B."""
        receiver = self.clients[1]
        while True:
            event = await receiver.next_event()
            if isinstance(event, MessageReceived):
                self.received[event.id] = (time.monotonic_ns(), event)
                self.arrived.set()

    async def _arrival(self, mid: str, timeout: float) -> tuple[int, MessageReceived]:
        """When message `mid` reached B (monotonic ns) and the event."""
        async with asyncio.timeout(timeout):
            while mid not in self.received:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received.pop(mid)

    async def cmd_run(
        self, size: int, reps: int, server_pid: int, plain_pid: int, op_timeout: float
    ) -> Args:
        """Send a file of `size` random bytes `reps` times both ways; seconds per step."""
        path = self.work / "send" / f"random-{size}.bin"
        sha256 = await asyncio.to_thread(_write_random, path, size)
        sniff = await asyncio.to_thread(_sniff_seconds, path)
        server, plain = psutil.Process(server_pid), psutil.Process(plain_pid)
        sdk: list[Args] = []
        ref: list[Args] = []
        try:
            for rep in range(reps):
                if rep % 2:
                    ref.append(await self._plain_once(path, size, sha256, plain, op_timeout))
                    sdk.append(await self._sdk_once(path, size, sha256, server, op_timeout))
                else:
                    sdk.append(await self._sdk_once(path, size, sha256, server, op_timeout))
                    ref.append(await self._plain_once(path, size, sha256, plain, op_timeout))
        finally:
            await asyncio.to_thread(path.unlink, True)
        return {"sniff_s": sniff, "sdk": sdk, "plain": ref}

    async def _sdk_once(
        self,
        path: Path,
        size: int,
        sha256: str,
        server: psutil.Process | None,
        timeout: float,
    ) -> Args:
        """A sends the file to B, B downloads it as soon as it arrived."""
        sender = self.clients[0]
        s0 = _snap(server)
        c0 = time.process_time()
        t0 = time.monotonic_ns()
        mid = await asyncio.wait_for(sender.chat(number(1)).send_file(path), timeout)
        t1 = time.monotonic_ns()
        c1 = time.process_time()
        s1 = _snap(server)
        arrived, event = await self._arrival(mid, timeout)
        c2 = time.process_time()
        t2 = time.monotonic_ns()
        saved = await asyncio.wait_for(event.download(to=self.work / "down"), timeout)
        t3 = time.monotonic_ns()
        c3 = time.process_time()
        s2 = _snap(server)
        await asyncio.to_thread(_check_file, saved, size, sha256)
        # end to end as if B had started at max(t1, arrival): the snapshot between is left out
        return {
            "upload_s": (t1 - t0) / 1e9,
            "download_s": (t3 - t2) / 1e9,
            "e2e_s": (t3 - t2 + max(t1, arrived) - t0) / 1e9,
            "arrival_after_sent_ms": (arrived - t1) / 1e6,
            "client_cpu_upload_s": c1 - c0,
            "client_cpu_download_s": c3 - c2,
            "server_cpu_upload_s": _cpu(s0, s1),
            "server_cpu_download_s": _cpu(s1, s2),
        }

    async def _plain_once(
        self,
        path: Path,
        size: int,
        sha256: str,
        plain: psutil.Process | None,
        timeout: float,
    ) -> Args:
        """PUT the file to the plain server, GET it back into a file."""
        assert self.session is not None
        url = f"{self.plain_url}/files/{path.stem}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        s0 = _snap(plain)
        c0 = time.process_time()
        t0 = time.monotonic_ns()
        async with asyncio.timeout(timeout):
            async with self.session.put(url, data=_read(path), headers=headers) as resp:
                resp.raise_for_status()
                await resp.read()
        t1 = time.monotonic_ns()
        c1 = time.process_time()
        s1 = _snap(plain)
        c1b = time.process_time()
        t1b = time.monotonic_ns()
        target = self.work / "plain" / path.name
        async with asyncio.timeout(timeout):
            await _get(self.session, url, target)
        t2 = time.monotonic_ns()
        c2 = time.process_time()
        s2 = _snap(plain)
        await asyncio.to_thread(_check_file, target, size, sha256)
        async with asyncio.timeout(timeout), self.session.delete(url) as resp:
            resp.raise_for_status()
        return {
            "upload_s": (t1 - t0) / 1e9,
            "download_s": (t2 - t1b) / 1e9,
            "client_cpu_upload_s": c1 - c0,
            "client_cpu_download_s": c2 - c1b,
            "server_cpu_upload_s": _cpu(s0, s1),
            "server_cpu_download_s": _cpu(s1, s2),
        }

    async def close(self) -> None:
        """Stop reading events, close the clients and the HTTP session."""
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        if self.session is not None:
            await self.session.close()


def _snap(proc: psutil.Process | None) -> Snapshot | None:
    return None if proc is None else Snapshot.of_tree(proc)


def _cpu(before: Snapshot | None, after: Snapshot | None) -> float:
    return 0.0 if before is None or after is None else after.cpu_since(before)


async def _read(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes a piece at a time, each read on a thread."""
    with path.open("rb") as f:
        while piece := await asyncio.to_thread(f.read, PIECE):
            yield piece


async def _get(session: aiohttp.ClientSession, url: str, target: Path) -> None:
    """Stream a GET into a file, written on a thread and fsynced (as the SDK's download is)."""
    f = await asyncio.to_thread(target.open, "wb")
    try:
        async with session.get(url) as resp:
            resp.raise_for_status()
            async for piece in resp.content.iter_chunked(PIECE):
                await asyncio.to_thread(f.write, piece)
        await asyncio.to_thread(_flush_sync, f)
    finally:
        f.close()


def _flush_sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _summary(size: int, reps: int, run: Args, backend: str) -> Args:
    """The figures of one size: medians over the repetitions, and every repetition."""
    mb = size / MB
    sdk, ref = run["sdk"], run["plain"]

    def col(rows: list[Args], key: str) -> list[float]:
        return [float(r[key]) for r in rows]

    def rate(rows: list[Args], key: str) -> float:
        return median(mb / s for s in col(rows, key) if s > 0)

    def per_mb_ms(rows: list[Args], key: str) -> float:  # over all repetitions: CPU ticks
        return sum(col(rows, key)) * 1000 / (mb * len(rows))

    upload, download, e2e = rate(sdk, "upload_s"), rate(sdk, "download_s"), rate(sdk, "e2e_s")
    plain_up, plain_down = rate(ref, "upload_s"), rate(ref, "download_s")
    # the same bytes up, then down, plainly: the most a sequential end to end could reach
    round_trip = 1 / (1 / plain_up + 1 / plain_down)
    label = f"{size / MIB:g}MiB"
    return {
        "section": ("pg-" if backend == "postgres" else "") + f"media-{label}",
        "backend": backend,
        "size_bytes": size,
        "size_mib": size / MIB,
        "reps": reps,
        "upload_mb_s": upload,
        "download_mb_s": download,
        "e2e_mb_s": e2e,
        "plain_upload_mb_s": plain_up,
        "plain_download_mb_s": plain_down,
        "plain_round_trip_mb_s": round_trip,
        "e2e_over_plain_upload": e2e / plain_up,
        "e2e_over_plain_round_trip": e2e / round_trip,
        "upload_over_plain_upload": upload / plain_up,
        "download_over_plain_download": download / plain_down,
        "sniff_ms": run["sniff_s"] * 1000,
        "server_cpu_ms_per_mb_upload": per_mb_ms(sdk, "server_cpu_upload_s"),
        "server_cpu_ms_per_mb_download": per_mb_ms(sdk, "server_cpu_download_s"),
        "plain_server_cpu_ms_per_mb_upload": per_mb_ms(ref, "server_cpu_upload_s"),
        "plain_server_cpu_ms_per_mb_download": per_mb_ms(ref, "server_cpu_download_s"),
        "client_cpu_ms_per_mb_upload": per_mb_ms(sdk, "client_cpu_upload_s"),
        "client_cpu_ms_per_mb_download": per_mb_ms(sdk, "client_cpu_download_s"),
        "plain_client_cpu_ms_per_mb_upload": per_mb_ms(ref, "client_cpu_upload_s"),
        "plain_client_cpu_ms_per_mb_download": per_mb_ms(ref, "client_cpu_download_s"),
        "upload_ms": summarize(s * 1000 for s in col(sdk, "upload_s")),
        "download_ms": summarize(s * 1000 for s in col(sdk, "download_s")),
        "e2e_ms": summarize(s * 1000 for s in col(sdk, "e2e_s")),
        "arrival_after_sent_ms": summarize(col(sdk, "arrival_after_sent_ms")),
        "plain_upload_ms": summarize(s * 1000 for s in col(ref, "upload_s")),
        "plain_download_ms": summarize(s * 1000 for s in col(ref, "download_s")),
        "repetitions": {"sdk": sdk, "plain": ref},
    }


async def run_media(p: MediaParams, settings: Settings) -> list[Args]:
    """Run every size on one server and one plain server; one result per size."""
    sizes = p.sizes()
    options = {**server_options(max(s for s, _ in sizes)), **settings.server_options}
    settings = dataclasses.replace(settings, server_options=options)
    results = []
    async with environment(settings) as env:
        plain = PlainServer(env.tmp / "plain")
        try:
            plain.start()
            spec = env.spec([0, 1], work=str(env.tmp / "client"))
            with generators(env, MediaWorker, [spec]) as pool:

                def watch() -> None:
                    env.check()
                    plain.check()

                pool.watch = watch
                setup = {"server_url": env.server.url, "plain_url": plain.url, "timeout": 120.0}
                await pool.call("setup", setup, 150)
                for size, reps in sizes:
                    args = {
                        "size": size,
                        "reps": reps,
                        "server_pid": env.server.pid,
                        "plain_pid": plain.pid,
                        "op_timeout": p.op_timeout,
                    }
                    timeout = 60 + reps * 5 * p.op_timeout
                    (run,) = await pool.call("run", args, timeout)
                    results.append(_summary(size, reps, run, settings.backend))
        finally:
            plain.stop()
    return results
