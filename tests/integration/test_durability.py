"""Nothing acknowledged is lost: crashes of the server and of clients, re-sends."""

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from plauder.client import Client, MessageReceived, ReceiptReceived
from plauder.client.connection import next_request_id
from plauder.protocol.content import Text, encode_content
from plauder.protocol.frames import Send, Sent
from tests.conftest import ServerProcess, register
from tests.integration.test_messaging import next_of

HERE = Path(__file__).parent


def queued(server: ServerProcess) -> int:
    """Envelopes the server holds in its database."""
    return int(server.sql("SELECT count(*) FROM envelopes")[0][0])  # type: ignore[call-overload]


async def test_kill_9_after_ok_loses_nothing(
    server: ServerProcess, tmp_path: Path, numbers: Iterator[str]
) -> None:
    profiles = tmp_path / "profiles"
    alice = await register(server, profiles, next(numbers))
    bob = await register(server, profiles, next(numbers))
    await alice.start(receive=False)
    sent = [await alice.send_text(bob.number, f"vor dem Absturz {i}") for i in range(20)]

    server.kill()  # right after the last `sent`: no graceful anything
    server.start()  # same data folder, same port

    await bob.start()
    await bob.wait_idle()
    got = [e.id for e in bob.history(alice.number)]
    assert got == sent  # all of them, in order, once

    # the sender's client reconnected by itself and keeps working
    after = await alice.send_text(bob.number, "nach dem Absturz")
    async with asyncio.timeout(10):
        while not any(e.id == after for e in bob.history(alice.number)):
            await asyncio.sleep(0.05)
    await alice.close()
    await bob.close()


async def test_same_frame_twice_is_stored_once(
    make_client: Callable[..., Any], server: ServerProcess
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client(start=False)
    cmid = b"\x01" * 16
    content = encode_content(Text(id=cmid.hex(), ts=1, body="nur einmal"))
    entry = await alice._queue(bob.number, cmid, content)
    frame = msgspec.msgpack.decode(entry.frame, type=Send)

    first = await alice._request(msgspec.structs.replace(frame, id=next_request_id()))
    second = await alice._request(msgspec.structs.replace(frame, id=next_request_id()))
    assert isinstance(first, Sent) and isinstance(second, Sent)
    assert (first.duplicate, second.duplicate) == (False, True)
    assert first.ts == second.ts
    assert queued(server) == 1

    await bob.start()
    await bob.wait_idle()
    assert [e.body for e in bob.history(alice.number)] == ["nur einmal"]
    assert queued(server) <= 1  # bob's delivered receipt to alice may still be queued


async def test_receiver_crash_before_ack_shows_message_once(
    server: ServerProcess, tmp_path: Path, numbers: Iterator[str]
) -> None:
    profiles = tmp_path / "profiles"
    alice = await register(server, profiles, next(numbers))
    bob = await register(server, profiles, next(numbers))
    bob_profile = bob.profile_dir
    await bob.close()
    await alice.start()
    mid = await alice.send_text(bob.number, "Absturz vor der Quittung")

    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crashy_receiver.py"), str(bob_profile), bob.number],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.strip() == f"GOT {mid}"
        assert queued(server) == 1  # stored on the device, not acknowledged
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    bob = Client(bob_profile, bob.number)
    await bob.start()
    await bob.wait_idle()
    assert [e.id for e in bob.history(alice.number)] == [mid]
    assert not [e for e in bob.pending_events() if isinstance(e, MessageReceived)]
    # the delivered receipt was stored with the message, so it survived the crash too
    receipt = await next_of(alice, ReceiptReceived)
    assert (receipt.status, receipt.ids) == ("delivered", (mid,))
    async with asyncio.timeout(10):  # the redelivered envelope was acked this time
        while queued(server) > 0:
            await asyncio.sleep(0.05)
    await alice.close()
    await bob.close()


async def test_graceful_shutdown_and_reconnect(
    server: ServerProcess, make_client: Callable[..., Any]
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    assert server.stop() == 0
    assert "plauder: stopped" in server.log_text()

    server.start()
    mid = await alice.send_text(bob.number, "wieder da")
    async with asyncio.timeout(15):
        while True:
            ev = await bob.next_event()
            if isinstance(ev, MessageReceived):
                assert ev.id == mid
                break


async def test_server_files_never_contain_plaintext(
    server: ServerProcess, make_client: Callable[..., Any], tmp_path: Path
) -> None:
    secret = "Geheimnis-4711-ÄÖÜ streng vertraulich"
    alice: Client = await make_client()
    bob: Client = await make_client(start=False)
    for _ in range(3):
        await alice.send_text(bob.number, secret)
    await bob.start()
    await bob.wait_idle()
    await bob.mark_read(alice.number)
    await bob.send_text(alice.number, secret)

    needles = [secret.encode(), secret.encode("utf-16-le"), b"Geheimnis-4711"]

    def scan(folder: Path) -> list[Path]:
        hits = []
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                if any(n in data for n in needles):
                    hits.append(path)
        return hits

    for folder in server.storage:  # database, WAL and shared memory while running
        assert scan(folder) == []
    assert secret not in server.log_text()
    server.stop()
    for folder in server.storage:  # after the checkpoint at shutdown
        assert scan(folder) == []
    assert not [p for p in [server.log_path] if secret.encode() in p.read_bytes()]
    # the clients' stores keep message bodies sealed too
    assert scan(tmp_path / "profiles") == []
    assert [e.body for e in bob.history(alice.number)][-1] == secret
