"""Tests of plauder.crypto.sessions: Olm sessions between two devices."""

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plauder.crypto import (
    AccountKey,
    BadStoreKey,
    CryptoError,
    DecryptionFailed,
    Device,
    OlmSessions,
    UntrustedDevice,
    verify_device,
)
from plauder.protocol.frames import DeviceKeys

KEY = bytes(range(32))


@dataclass
class Party:
    """A user with one device and its sessions."""

    account: AccountKey
    device: Device
    keys: DeviceKeys
    sessions: OlmSessions

    @property
    def ik(self) -> str:
        """The device's identity key."""
        return self.device.identity_key


def make_party(device_id: int = 1) -> Party:
    """Create an account with one signed device."""
    account = AccountKey.generate()
    device = Device.create()
    keys = account.sign_device(device.identity_key, device.signing_key, device_id)
    return Party(account, device, keys, OlmSessions(device))


def start(sender: Party, receiver: Party) -> None:
    """Let the sender start a session with one of the receiver's one-time keys."""
    verify_device(receiver.account.public_key, receiver.keys)
    [prekey] = receiver.device.new_one_time_keys(1)
    sender.sessions.start_session(receiver.keys, prekey)


def send(sender: Party, receiver: Party, text: str) -> int:
    """Deliver one message and check it arrives; return its Olm message type."""
    message_type, body = sender.sessions.encrypt(receiver.ik, text.encode())
    assert receiver.sessions.decrypt(sender.ik, message_type, body) == text.encode()
    return message_type


def established() -> tuple[Party, Party]:
    """Return Alice and Bob with a session that both sides have used."""
    alice, bob = make_party(), make_party()
    start(alice, bob)
    send(alice, bob, "hi")
    send(bob, alice, "hello")
    return alice, bob


def test_full_exchange() -> None:
    alice, bob = make_party(), make_party()
    assert not alice.sessions.has_session(bob.ik)
    with pytest.raises(CryptoError):
        alice.sessions.encrypt(bob.ik, b"no session yet")
    start(alice, bob)
    assert alice.sessions.has_session(bob.ik)
    assert alice.sessions.dirty_peers() == {bob.ik}

    assert send(alice, bob, "first") == 0
    assert send(alice, bob, "second, still pre-key") == 0
    assert bob.sessions.has_session(alice.ik)
    assert bob.sessions.device_dirty()
    assert bob.sessions.dirty_peers() == {alice.ik}
    bob.sessions.clear_dirty()
    assert bob.sessions.dirty_peers() == set()
    assert not bob.sessions.device_dirty()

    assert send(bob, alice, "reply") == 1
    assert bob.sessions.dirty_peers() == {alice.ik}
    for i in range(5):
        assert send(alice, bob, f"a{i}") == 1
        assert send(alice, bob, f"a{i}b") == 1
        assert send(bob, alice, f"b{i}") == 1


def test_out_of_order_within_a_chain() -> None:
    alice, bob = established()
    messages = [alice.sessions.encrypt(bob.ik, f"m{i}".encode()) for i in range(6)]
    for i in (3, 0, 5, 1, 4, 2):
        message_type, body = messages[i]
        assert bob.sessions.decrypt(alice.ik, message_type, body) == f"m{i}".encode()
    send(bob, alice, "all received")


def test_out_of_order_pre_key_messages() -> None:
    alice, bob = make_party(), make_party()
    start(alice, bob)
    first = alice.sessions.encrypt(bob.ik, b"one")
    second = alice.sessions.encrypt(bob.ik, b"two")
    assert bob.sessions.decrypt(alice.ik, *second) == b"two"
    assert bob.sessions.decrypt(alice.ik, *first) == b"one"
    send(bob, alice, "ok")


def test_both_sides_start_at_once_and_converge() -> None:
    alice, bob = make_party(), make_party()
    start(alice, bob)
    start(bob, alice)
    from_alice = alice.sessions.encrypt(bob.ik, b"hi bob")
    from_bob = bob.sessions.encrypt(alice.ik, b"hi alice")
    assert from_alice[0] == 0
    assert from_bob[0] == 0
    assert bob.sessions.decrypt(alice.ik, *from_alice) == b"hi bob"
    assert alice.sessions.decrypt(bob.ik, *from_bob) == b"hi alice"
    for i in range(3):
        assert send(alice, bob, f"a{i}") == 1
        assert send(bob, alice, f"b{i}") == 1
    assert len(alice.sessions.pickle_peer(bob.ik, KEY)) == 2
    assert len(bob.sessions.pickle_peer(alice.ik, KEY)) == 2


def test_sessions_capped_at_five_per_peer() -> None:
    alice, bob = make_party(), make_party()
    for _ in range(7):
        start(alice, bob)
    assert len(alice.sessions.pickle_peer(bob.ik, KEY)) == 5
    send(alice, bob, "newest session works")


def test_fallback_key_starts_sessions() -> None:
    alice, carol, bob = make_party(), make_party(), make_party()
    fallback = bob.device.new_fallback_key()
    for sender in (alice, carol):
        sender.sessions.start_session(bob.keys, fallback)
        assert send(sender, bob, "via fallback") == 0
        assert send(bob, sender, "answer") == 1


def test_start_session_rejects_unsigned_prekey() -> None:
    alice, bob, mallory = make_party(), make_party(), make_party()
    [foreign] = mallory.device.new_one_time_keys(1)
    with pytest.raises(UntrustedDevice):
        alice.sessions.start_session(bob.keys, foreign)
    assert not alice.sessions.has_session(bob.ik)


def test_bad_messages_raise_and_sessions_keep_working() -> None:
    alice, bob = make_party(), make_party()
    start(alice, bob)
    pre_key = alice.sessions.encrypt(bob.ik, b"pre-key")
    assert bob.sessions.decrypt(alice.ik, *pre_key) == b"pre-key"
    send(bob, alice, "now normal")
    normal = alice.sessions.encrypt(bob.ik, b"normal")
    assert normal[0] == 1
    assert bob.sessions.decrypt(alice.ik, *normal) == b"normal"
    later = alice.sessions.encrypt(bob.ik, b"later")
    tampered = bytearray(later[1])
    tampered[len(tampered) // 2] ^= 0x01
    bob.sessions.clear_dirty()

    bad = [
        (1, b"garbage"),
        (0, b"garbage"),
        (1, b""),
        (2, later[1]),
        (-1, later[1]),
        (2**70, later[1]),
        (0, later[1]),
        (1, bytes(tampered)),
        pre_key,  # replayed pre-key message
        normal,  # replayed normal message
        (1, pre_key[1]),
    ]
    for message_type, body in bad:
        with pytest.raises(DecryptionFailed):
            bob.sessions.decrypt(alice.ik, message_type, body)
    with pytest.raises(DecryptionFailed):
        bob.sessions.decrypt(make_party().ik, *later)
    with pytest.raises(DecryptionFailed):
        bob.sessions.decrypt("not a key", *pre_key)
    assert bob.sessions.dirty_peers() == set()
    assert not bob.sessions.device_dirty()

    assert bob.sessions.decrypt(alice.ik, *later) == b"later"
    for i in range(3):
        send(alice, bob, f"a{i}")
        send(bob, alice, f"b{i}")


def test_pre_key_message_from_a_stranger_fails() -> None:
    alice, bob, eve = make_party(), make_party(), make_party()
    start(alice, bob)
    message = alice.sessions.encrypt(bob.ik, b"for bob")
    with pytest.raises(DecryptionFailed):
        bob.sessions.decrypt(eve.ik, *message)
    assert bob.sessions.decrypt(alice.ik, *message) == b"for bob"


def test_pickle_round_trip() -> None:
    alice, bob = established()
    in_flight = alice.sessions.encrypt(bob.ik, b"sent before the restart")

    device = Device.from_pickle(bob.device.pickle(KEY), KEY)
    restored = OlmSessions(device)
    assert not restored.has_session(alice.ik)
    restored.load_peer(alice.ik, bob.sessions.pickle_peer(alice.ik, KEY), KEY)
    assert restored.has_session(alice.ik)
    assert restored.dirty_peers() == set()
    bob = Party(bob.account, device, bob.keys, restored)

    assert bob.sessions.decrypt(alice.ik, *in_flight) == b"sent before the restart"
    for i in range(3):
        send(alice, bob, f"a{i}")
        send(bob, alice, f"b{i}")


def test_restored_device_accepts_new_sessions() -> None:
    alice, bob = make_party(), make_party()
    [prekey] = bob.device.new_one_time_keys(1)
    device = Device.from_pickle(bob.device.pickle(KEY), KEY)
    bob = Party(bob.account, device, bob.keys, OlmSessions(device))
    alice.sessions.start_session(bob.keys, prekey)
    send(alice, bob, "after restart")
    send(bob, alice, "works")


def test_pickle_with_wrong_key_fails() -> None:
    alice, bob = established()
    pickles = alice.sessions.pickle_peer(bob.ik, KEY)
    fresh = OlmSessions(alice.device)
    with pytest.raises(BadStoreKey):
        fresh.load_peer(bob.ik, pickles, bytes(32))
    with pytest.raises(BadStoreKey):
        fresh.load_peer(bob.ik, ["garbage"], KEY)
    with pytest.raises(BadStoreKey):
        alice.sessions.pickle_peer(bob.ik, b"short")
    assert not fresh.has_session(bob.ik)
    assert alice.sessions.pickle_peer("unknown", KEY) == []


@pytest.fixture(scope="module")
def pair() -> tuple[Party, Party]:
    """One established Alice-Bob pair shared by the property tests."""
    return established()


@given(text=st.text())
def test_round_trip_of_arbitrary_text(pair: tuple[Party, Party], text: str) -> None:
    alice, bob = pair
    send(alice, bob, text)
    send(bob, alice, text)
