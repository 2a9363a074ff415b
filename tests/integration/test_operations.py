"""What an operator sees: the http code sender, logs without numbers, the outbox at work."""

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from plauder.client import Client, MessageReceived, Queued
from tests.conftest import ServerProcess


class SmsGateway:
    """A real HTTP endpoint standing where an SMS provider would."""

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.codes[body["number"]] = body["code"]
        return web.Response(status=204)


@pytest.fixture
async def sms() -> AsyncIterator[SmsGateway]:
    gateway = SmsGateway()
    app = web.Application()
    app.router.add_post("/sms", gateway.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gateway.url = f"http://127.0.0.1:{port}/sms"
    yield gateway
    await runner.cleanup()


async def wait_code(sms: SmsGateway, number: str) -> str:
    async with asyncio.timeout(10):
        while number not in sms.codes:
            await asyncio.sleep(0.02)
    return sms.codes.pop(number)


async def test_http_sender_and_logs_without_numbers_or_ids(
    server_factory: Callable[..., ServerProcess],
    sms: SmsGateway,
    tmp_path: Path,
    numbers: Iterator[str],
) -> None:
    server = server_factory(sms_sender="http", sms_http_url=sms.url, log_format="json")
    clients = []
    for _ in range(2):
        number = next(numbers)
        c = Client(tmp_path / number.lstrip("+"), number)
        await c.request_code([server.url])
        await c.verify(await wait_code(sms, number))
        await c.start()
        clients.append(c)
    alice, bob = clients
    mid = await alice.send_text(bob.number, "Guten Morgen")
    async with asyncio.timeout(10):
        while not bob.history(alice.number):
            await asyncio.sleep(0.02)
    for c in clients:
        await c.close()
    server.stop()

    log = server.log_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(r["msg"].startswith("account registered") for r in records)  # INFO is logged
    assert not re.search(r"\+?49151\d{8}", log)  # no phone numbers
    assert mid not in log and "Guten Morgen" not in log


async def test_message_sent_while_server_down_goes_out_after_restart(
    server: ServerProcess, make_client: Callable[..., Any]
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    await alice.send_text(bob.number, "erste")  # sessions exist now
    server.kill()

    with pytest.raises(Queued) as queued:
        await alice.send_text(bob.number, "im Funkloch", timeout=1.0)
    pending = alice.history(bob.number)[-1]
    assert (pending.status, pending.id) == ("pending", queued.value.message_id)

    server.start()
    async with asyncio.timeout(20):
        while True:
            ev = await bob.next_event()
            if isinstance(ev, MessageReceived) and ev.body == "im Funkloch":
                break
        # the server routes before it answers: bob may have it before alice's `sent`
        while alice.history(bob.number)[-1].status not in ("sent", "delivered"):
            await asyncio.sleep(0.02)


def test_a_busy_port_is_a_clear_error(server: ServerProcess, tmp_path: Path) -> None:
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "plauder.cli",
            "serve",
            "--port",
            str(server.port),
            "--data",
            str(tmp_path / "second"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in second.stderr
    assert "Traceback" not in second.stderr
    assert server.alive()  # the first server is untouched
