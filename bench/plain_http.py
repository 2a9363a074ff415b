"""The reference of the `media` scenario: a plain HTTP file server on 127.0.0.1.

`PUT /files/<name>` streams the body into a file in steps of 1 MiB written on a
thread, then fsyncs the file and its folder before answering, as plauder's blob
store does with an upload; `GET /files/<name>` streams a file back in reads of
1 MiB on a thread, as plauder's `GET /media/<id>` does; `DELETE` removes it. No
tokens, no database, no encryption: what moving the same bytes through local
HTTP to disk and back costs on this machine.

Run as `python -m bench.plain_http FOLDER`; it prints `listening on http://...`.
"""

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from aiohttp import web

from bench.server import ListeningProcess

CHUNK = 1 << 20  # bytes written to or read from disk per step, as plauder's server
_NAME = re.compile(r"[0-9a-z-]{1,64}")


def _path(root: Path, request: web.Request) -> Path:
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        raise web.HTTPNotFound()
    return root / name


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync(fd: int, folder: Path) -> None:
    os.fsync(fd)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def make_app(root: Path) -> web.Application:
    """The three handlers over files in `root`."""

    async def put(request: web.Request) -> web.StreamResponse:
        path = _path(root, request)
        fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        buf = bytearray()
        taken = 0
        try:
            while chunk := await request.content.readany():
                buf += chunk
                taken += len(chunk)
                if len(buf) >= CHUNK:
                    await asyncio.to_thread(_write_all, fd, bytes(buf))
                    buf.clear()
            if buf:
                await asyncio.to_thread(_write_all, fd, bytes(buf))
            await asyncio.to_thread(_sync, fd, root)
        finally:
            os.close(fd)
        return web.json_response({"size": taken})

    async def get(request: web.Request) -> web.StreamResponse:
        path = _path(root, request)
        try:
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        try:
            size = os.fstat(fd).st_size
            response = web.StreamResponse()
            response.content_type = "application/octet-stream"
            response.content_length = size
            await response.prepare(request)
            start = 0
            while start < size:
                data = await asyncio.to_thread(os.pread, fd, min(CHUNK, size - start), start)
                if not data:
                    break
                await response.write(data)
                start += len(data)
            await response.write_eof()
            return response
        finally:
            os.close(fd)

    async def delete(request: web.Request) -> web.StreamResponse:
        path = _path(root, request)
        await asyncio.to_thread(path.unlink, True)
        return web.json_response({})

    app = web.Application()
    app.add_routes(
        [
            web.put("/files/{name}", put),
            web.get("/files/{name}", get, allow_head=False),
            web.delete("/files/{name}", delete),
        ]
    )
    return app


async def _serve(root: Path) -> None:
    runner = web.AppRunner(make_app(root), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    print(f"listening on http://127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """`python -m bench.plain_http FOLDER`, on uvloop as plauder's server."""
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    import uvloop

    uvloop.run(_serve(root))


class PlainServer(ListeningProcess):
    """`python -m bench.plain_http` as a subprocess, serving files in `root`."""

    name = "plain HTTP server"

    def __init__(self, root: Path) -> None:
        super().__init__(root.parent / f"{root.name}.log")
        self.root = root

    def start(self, timeout: float = 20.0) -> None:
        """Start it and wait until it prints its address."""
        self._launch([sys.executable, "-m", "bench.plain_http", str(self.root)], None, 1, timeout)


if __name__ == "__main__":
    main()
