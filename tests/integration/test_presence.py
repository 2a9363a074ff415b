"""Online status and last seen, and the setting that hides them."""

import asyncio
from collections.abc import Callable
from typing import Any

from plauder.client import Client, PresenceChanged
from tests.integration.test_messaging import next_of


async def test_online_then_last_seen(make_client: Callable[..., Any]) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    await alice.watch_presence([bob.number])
    now = await next_of(alice, PresenceChanged)
    assert (now.number, now.online) == (bob.number, True)

    await bob.close()
    gone = await next_of(alice, PresenceChanged)
    assert gone.online is False and gone.last_seen is not None


async def test_nobody_hides_presence_and_its_changes(make_client: Callable[..., Any]) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client()
    await bob.set_presence_visible(False)
    await alice.watch_presence([bob.number])
    shown = await next_of(alice, PresenceChanged)
    assert (shown.online, shown.last_seen) == (False, None)

    await bob.close()  # going offline must not be visible either
    await asyncio.sleep(0.5)
    assert not [e for e in alice.pending_events() if isinstance(e, PresenceChanged)]
