"""`plauder serve --workers 2`: two processes on one port, messages between them, crashes."""

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from plauder.client import Client, MessageReceived
from tests.conftest import BACKEND, LISTEN, ServerProcess, register
from tests.integration.test_messaging import next_of

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="workers need PostgreSQL and Redis")

PAIRS = 8


def workers(server: ServerProcess) -> list[psutil.Process]:
    """The supervisor's worker processes."""
    assert server.proc is not None
    return psutil.Process(server.proc.pid).children()


async def metric(server: ServerProcess, name: str, samples: int = 30) -> list[int]:
    """The metric as several workers report it (each request may reach another one)."""
    values = []
    # a new connection per request: the kernel picks the worker per connection
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(samples):
            async with session.get(server.url + "/metrics") as answer:
                found = re.search(rf"^plauder_{name} (\d+)$", await answer.text(), re.M)
                assert found, name
                values.append(int(found.group(1)))
    return values


async def exchange(clients: list[Client], label: str) -> None:
    """Each sender sends one message to its partner; each partner must get it."""
    for i in range(PAIRS):
        await clients[2 * i].send_text(clients[2 * i + 1].number, f"{label} {i}")
    for i in range(PAIRS):
        got = await next_of(clients[2 * i + 1], MessageReceived, timeout=20)
        assert got.body == f"{label} {i}"


@pytest.fixture
def started(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    server = server_factory(workers=2)
    deadline = time.monotonic() + 20
    while len(LISTEN.findall(server.log_text())) < 2:  # both workers listen
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)
    return server


@pytest.fixture
async def clients(
    started: ServerProcess, tmp_path: Path, numbers: Iterator[str]
) -> AsyncIterator[list[Client]]:
    """16 registered and started clients of the workers; closed at the end."""
    made: list[Client] = []
    try:
        for _ in range(2 * PAIRS):
            made.append(await register(started, tmp_path / "p", next(numbers)))
            await made[-1].start()
        yield made
    finally:
        for c in made:
            await c.close()


async def test_two_workers_share_the_port_and_deliver_between_them(
    started: ServerProcess, clients: list[Client]
) -> None:
    server = started
    assert len(set(LISTEN.findall(server.log_text()))) == 1  # one port for both
    assert len(workers(server)) == 2
    await exchange(clients, "Hallo")
    # the kernel spread the 16 connections over both workers, so some messages went
    # from one worker to the other through Redis
    assert max(await metric(server, "cluster_received")) > 0
    held = await metric(server, "devices_connected")  # of 16 receiving devices in all
    assert all(0 < n < 2 * PAIRS for n in held)  # so each worker holds some of them


async def test_a_killed_worker_is_replaced_and_its_clients_come_back(
    started: ServerProcess, clients: list[Client]
) -> None:
    server = started
    victim = workers(server)[0]
    victim.send_signal(signal.SIGKILL)
    async with asyncio.timeout(20):
        while victim.pid in [w.pid for w in workers(server)] or len(workers(server)) < 2:
            await asyncio.sleep(0.1)  # the supervisor starts a new one after a second
    await exchange(clients, "nach dem Absturz")


def test_workers_stop_when_the_supervisor_is_killed(started: ServerProcess) -> None:
    server = started
    orphans = workers(server)
    server.kill()  # SIGKILL to the supervisor: nothing passes the signal on
    _, alive = psutil.wait_procs(orphans, timeout=15)
    assert not alive, "workers outlived their supervisor"
    assert "supervisor gone" in server.log_text()
