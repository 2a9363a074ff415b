"""The SQLite writer's order of work: a send is not held behind a backlog of acks."""

import asyncio
import secrets
from pathlib import Path

from plauder.server.storage.sqlite import ACK_BUDGET_BESIDE, SqliteStore
from tests.unit.test_server_services import ALICE, BOB, queued_bodies, register, to


async def test_a_send_commits_before_a_backlog_of_acks_and_every_ack_still_lands(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "plauder.db")
    await store.start()
    try:
        alice, bob = await register(store, ALICE), await register(store, BOB)
        stored = [
            await store.store_message(alice, secrets.token_bytes(16), to(bob, b"%d" % i), 0)
            for i in range(40)
        ]
        eids = [d.eid for s in stored for d in s.deliveries]
        # acks queued first: 40 of bob's envelopes, then 400 acks of 50 unknown ids each
        # (20,000 acked envelopes, far over what one commit beside a send may carry)
        order: list[str] = []
        first = asyncio.ensure_future(store.ack(bob.device_pk, eids))
        backlog = [
            asyncio.ensure_future(
                store.ack(bob.device_pk, list(range(10**9 + 50 * k, 10**9 + 50 * k + 50)))
            )
            for k in range(400)
        ]
        backlog[-1].add_done_callback(lambda _: order.append("last ack"))
        send = asyncio.ensure_future(
            store.store_message(alice, secrets.token_bytes(16), to(bob, b"urgent"), 1)
        )
        send.add_done_callback(lambda _: order.append("send"))
        acked, _, *unknown = await asyncio.gather(first, send, *backlog)

        assert order == ["send", "last ack"]  # the send went ahead of the acks queued before it
        assert acked == 40 and unknown == [0] * 400
        assert await queued_bodies(store, bob) == [b"urgent"]
        assert ACK_BUDGET_BESIDE < 50 * 400
    finally:
        await store.close()
