"""Clients trust account keys, not the server: injected devices and key changes."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plauder.client import Client, IdentityChanged, MessageReceived, UntrustedDevices
from plauder.crypto import AccountKey, Device
from tests.conftest import ServerProcess, register
from tests.integration.test_messaging import next_of


def inject_device(server: ServerProcess, number: str, signed_by: AccountKey) -> None:
    """Do what a malicious server would: add a device the account never signed."""
    rogue = Device.create()
    keys = signed_by.sign_device(rogue.identity_key, rogue.signing_key, 7)
    ((account_id,),) = server.sql("SELECT id FROM accounts WHERE number = ?", number)
    server.sql(
        "INSERT INTO devices (account_id, device_id, identity_key, signing_key, signature, "
        "created) VALUES (?, 7, ?, ?, ?, 0)",
        account_id,
        keys.identity_key,
        keys.signing_key,
        keys.signature,
    )


def envelopes(server: ServerProcess) -> int:
    return int(server.sql("SELECT count(*) FROM envelopes")[0][0])  # type: ignore[call-overload]


async def test_client_refuses_device_not_signed_by_account_key(
    server: ServerProcess, make_client: Callable[..., Any]
) -> None:
    alice: Client = await make_client()
    bob: Client = await make_client(start=False)
    inject_device(server, bob.number, signed_by=AccountKey.generate())

    with pytest.raises(UntrustedDevices):
        await alice.send_text(bob.number, "darf niemand lesen")
    assert envelopes(server) == 0  # nothing was encrypted or sent
    assert alice.history(bob.number) == []


async def test_key_change_is_announced_and_new_device_reachable(
    server: ServerProcess, tmp_path: Path, numbers: Iterator[str]
) -> None:
    profiles = tmp_path / "profiles"
    alice = await register(server, profiles, next(numbers))
    bob_number = next(numbers)
    bob = await register(server, profiles, bob_number)
    await alice.start()
    await bob.start()
    await alice.send_text(bob_number, "vorher")
    await next_of(bob, MessageReceived)
    old_key = bob.account_key.public_key
    await bob.close()

    # bob reinstalls: a new profile, new keys, the same number
    bob = await register(server, tmp_path / "new-phone", bob_number)
    await bob.start()
    await alice.send_text(bob_number, "nachher")
    changed = await next_of(alice, IdentityChanged)
    assert (changed.number, changed.old_key) == (bob_number, old_key)
    assert changed.new_key == bob.account_key.public_key
    got = await next_of(bob, MessageReceived)
    assert got.body == "nachher"
    await alice.close()
    await bob.close()
