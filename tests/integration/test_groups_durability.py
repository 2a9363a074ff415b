"""Group messages survive crashes: the server's after `sent`, the sender's before it."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from plauder.client import Client, NotConnected
from tests.conftest import ServerProcess

MakeClient = Callable[..., Any]


async def wait_for(client: Client, gid: str, bodies: list[str]) -> None:
    """Wait until a group's history holds these bodies from members, in this order."""
    async with asyncio.timeout(15):
        while [e.body for e in client.groups.get(gid).history() if e.sender] != bodies:
            await asyncio.sleep(0.05)


async def test_group_messages_survive_kill_9_after_sent(
    server: ServerProcess, make_client: MakeClient
) -> None:
    alice, bob, carol = [await make_client(start=False) for _ in range(3)]
    await alice.start(receive=False)
    group = await alice.groups.create("Notfall", [bob.number, carol.number])
    await carol.start()
    sent = [f"vor dem Absturz {i}" for i in range(5)]
    for text in sent:
        await group.send(text)

    server.kill()  # right after the last `sent`
    server.start()

    await bob.start()
    await bob.wait_idle()
    assert [e.body for e in bob.groups.get(group.gid).history() if e.sender] == sent
    await wait_for(carol, group.gid, sent)  # carol was online: reconnected by herself

    await group.send("nach dem Absturz")
    await wait_for(bob, group.gid, [*sent, "nach dem Absturz"])


async def test_group_send_queued_while_offline_survives_a_client_restart(
    server: ServerProcess, make_client: MakeClient
) -> None:
    alice = await make_client(start=False)
    bob = await make_client()
    await alice.start(receive=False)
    group = await alice.groups.create("Funkloch", [bob.number])

    server.stop()
    with pytest.raises(NotConnected):
        await group.send("im Funkloch geschrieben", timeout=0.5)
    assert [e.status for e in group.history() if e.sender] == ["pending"]
    await alice.close()  # the app is closed before the server is back

    server.start()
    alice = Client(alice.profile_dir, alice.number)
    await alice.start(receive=False)  # the outbox goes out after authentication
    await wait_for(bob, group.gid, ["im Funkloch geschrieben"])
    async with asyncio.timeout(10):
        while alice.groups.get(group.gid).history()[-1].status == "pending":
            await asyncio.sleep(0.05)
    assert alice.store.outbox() == []
    await alice.close()
