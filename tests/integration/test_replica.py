"""PostgreSQL with a synchronous hot standby: the primary crashes, the standby is promoted.

The node is given both servers in one URL with `target_session_attrs=read-write`,
so its pool finds whichever is the primary. Nothing the node answered `sent`
for is lost, and it recovers without a restart.
"""

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plauder.client import Client, MessageReceived
from tests.conftest import BACKEND, ServerProcess, register
from tests.integration.test_messaging import next_of
from tests.services import Postgres

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="needs PostgreSQL")


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[Postgres, Postgres]]:
    """A primary and a hot standby streaming from it, committing synchronously."""
    primary = Postgres()
    primary.start()
    standby = Postgres(base_backup_of=primary)
    standby.start()
    primary.synchronous()
    yield primary, standby
    standby.destroy()
    primary.destroy()


async def test_failover_to_the_promoted_standby_loses_nothing(
    primary_and_standby: tuple[Postgres, Postgres],
    server_factory: Callable[..., ServerProcess],
    tmp_path: Path,
    numbers: Iterator[str],
) -> None:
    primary, standby = primary_and_standby
    name = primary.create_database().rsplit("/", 1)[1]
    hosts = f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
    url = f"postgresql://plauder@{hosts}/{name}?target_session_attrs=read-write"
    server = server_factory(database=url)
    profiles = tmp_path / "profiles"
    alice: Client = await register(server, profiles, next(numbers))
    bob: Client = await register(server, profiles, next(numbers))
    await alice.start(receive=False)
    before = [f"vor dem Failover {i}" for i in range(10)]
    for text in before:
        await alice.send_text(bob.number, text)  # `sent`: committed on both servers

    primary.kill()
    standby.promote()

    after = "nach dem Failover"
    await alice.send_text(bob.number, after, timeout=30)  # the node found the new primary
    await bob.start()
    got = [(await next_of(bob, MessageReceived, timeout=30)).body for _ in range(11)]
    assert got == [*before, after]
    await asyncio.sleep(0.5)
    assert [e.body for e in bob.history(alice.number)] == [*before, after]  # once each
    assert server.alive()
    await alice.close()
    await bob.close()
