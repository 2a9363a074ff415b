"""Batched server frames are valid WebSocket frames, whatever their length."""

import asyncio

import aiohttp
from aiohttp import web

from plauder.server.framing import BatchedWriter, Flusher, binary_frame_header

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 200_000]


def test_header_lengths_follow_rfc_6455() -> None:
    assert binary_frame_header(125) == b"\x82\x7d"
    assert binary_frame_header(126) == b"\x82\x7e\x00\x7e"
    assert binary_frame_header(65535) == b"\x82\x7e\xff\xff"
    assert binary_frame_header(65536) == b"\x82\x7f" + (65536).to_bytes(8, "big")


async def test_a_real_client_reads_every_batched_frame_in_order() -> None:
    payloads = [bytes([i % 251]) * n for i, n in enumerate(SIZES)]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        flusher = Flusher(asyncio.get_running_loop())
        writer = BatchedWriter(request.transport, flusher)  # type: ignore[arg-type]
        for p in payloads:  # all in one turn of the loop: one write
            assert writer.send(p)
        await ws.receive()  # until the client closes
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/", max_msg_size=0) as ws,
        ):
            got = [(await ws.receive(timeout=10)).data for _ in payloads]
        assert got == payloads
    finally:
        await runner.cleanup()


class _Socket:
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


async def test_every_connection_is_written_once_per_loop_turn() -> None:
    loop = asyncio.get_running_loop()
    flusher = Flusher(loop)
    sockets = [_Socket() for _ in range(3)]
    writers = [BatchedWriter(s, flusher) for s in sockets]
    for w in writers:  # a group message to three connections, then a second one
        assert w.send(b"one") and w.send(b"two")
    assert all(not s.writes for s in sockets)  # nothing before the turn ends
    await asyncio.sleep(0)
    frame = binary_frame_header(3)
    assert all(s.writes == [frame + b"one" + frame + b"two"] for s in sockets)
    writers[1].send(b"three")  # a later turn writes only what it queued
    await asyncio.sleep(0)
    assert [len(s.writes) for s in sockets] == [1, 2, 1]
