"""Tests of plauder.crypto.groups: Megolm sessions of a group, with real vodozemac."""

import dataclasses
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plauder.crypto import (
    MAX_GROUP_MESSAGES,
    MAX_GROUP_SESSION_AGE_MS,
    AccountKey,
    BadStoreKey,
    DecryptionFailed,
    Device,
    GroupCiphertext,
    GroupKeyShare,
    GroupSessionExpired,
    InboundGroupSessions,
    OutboundGroupSession,
    ReplayedMessage,
    UnknownGroupSession,
    UntrustedDevice,
)
from plauder.protocol.frames import DeviceKeys

KEY = bytes(range(32))
GROUP = "group-1"
T0 = 1_700_000_000_000


@dataclass
class Member:
    """A member device of the group, its signed keys and the sessions shared with it."""

    device: Device
    keys: DeviceKeys
    inbound: InboundGroupSessions = field(default_factory=InboundGroupSessions)

    @property
    def ik(self) -> str:
        """The device's identity key."""
        return self.device.identity_key

    def receive_key(self, share: GroupKeyShare, sender: "Member") -> None:
        """Import a share as if it arrived over the sender's Olm channel."""
        self.inbound.import_share(share, sender.ik, sender.keys)

    def read(self, sender: "Member", message: GroupCiphertext) -> bytes:
        """Decrypt a group message from the sender."""
        result = self.inbound.decrypt(GROUP, sender.ik, message.session_id, message.ciphertext)
        assert result.message_index == message.message_index
        assert result.sender_signing_key == sender.keys.signing_key
        return result.plaintext


def make_member(device_id: int = 1) -> Member:
    """Create a device signed by a fresh account."""
    device = Device.create()
    keys = AccountKey.generate().sign_device(device.identity_key, device.signing_key, device_id)
    return Member(device, keys)


def share_with(
    sender: Member, outbound: OutboundGroupSession, receivers: list[Member]
) -> GroupKeyShare:
    """Share the sender's current session key with each receiver."""
    share = outbound.key_share(sender.device)
    for receiver in receivers:
        receiver.receive_key(share, sender)
    return share


def resign(share: GroupKeyShare, signer: Member, **changes: str) -> GroupKeyShare:
    """Return the share with changes, claimed and validly signed by another device."""
    share = dataclasses.replace(
        share,
        sender_identity_key=signer.ik,
        sender_signing_key=signer.keys.signing_key,
        **changes,
    )
    return dataclasses.replace(share, signature=signer.device.sign(share.payload()))


def alice_and_bob() -> tuple[Member, Member, OutboundGroupSession]:
    """Two members and alice's session for the group, shared with bob."""
    alice, bob = make_member(1), make_member(2)
    outbound = OutboundGroupSession.create(GROUP, T0)
    share_with(alice, outbound, [bob])
    return alice, bob, outbound


def test_three_members_exchange() -> None:
    members = [make_member(i) for i in range(3)]
    outbound = {}
    for sender in members:
        outbound[sender.ik] = OutboundGroupSession.create(GROUP, T0)
        share_with(sender, outbound[sender.ik], [m for m in members if m is not sender])
    for round_ in range(3):
        for sender in members:
            text = f"{round_} from {sender.keys.device_id}".encode()
            message = outbound[sender.ik].encrypt(text, T0)
            assert message.message_index == round_
            for receiver in members:
                if receiver is not sender:
                    assert receiver.read(sender, message) == text


def test_a_later_member_reads_only_what_follows_its_key() -> None:
    alice, bob, carol = make_member(1), make_member(2), make_member(3)
    outbound = OutboundGroupSession.create(GROUP, T0)
    share_with(alice, outbound, [bob])
    before = outbound.encrypt(b"before carol", T0)
    # Adding a member forces no rotation; carol gets the key at the current index.
    assert not outbound.needs_rotation(T0)
    share = share_with(alice, outbound, [carol])
    assert share.message_index == 1
    assert carol.inbound.first_known_index(alice.ik, outbound.session_id) == 1
    after = outbound.encrypt(b"after carol", T0)
    with pytest.raises(DecryptionFailed):
        carol.read(alice, before)
    assert carol.read(alice, after) == b"after carol"
    assert bob.read(alice, before) == b"before carol"
    assert bob.read(alice, after) == b"after carol"


def test_a_removed_member_cannot_read_the_next_session() -> None:
    alice, bob, mallory = make_member(1), make_member(2), make_member(3)
    old = OutboundGroupSession.create(GROUP, T0)
    share_with(alice, old, [bob, mallory])
    assert mallory.read(alice, old.encrypt(b"hello", T0)) == b"hello"
    assert old.needs_rotation(T0, member_removed=True)
    new = OutboundGroupSession.create(GROUP, T0 + 1)
    assert new.session_id != old.session_id
    share_with(alice, new, [bob])
    message = new.encrypt(b"mallory is gone", T0 + 1)
    assert bob.read(alice, message) == b"mallory is gone"
    with pytest.raises(UnknownGroupSession):
        mallory.read(alice, message)
    # Nor does the old session's key open the new session's message.
    forged = GroupCiphertext(
        session_id=old.session_id, message_index=1, ciphertext=message.ciphertext
    )
    with pytest.raises(DecryptionFailed):
        mallory.read(alice, forged)


def test_rotation_after_100_messages() -> None:
    outbound = OutboundGroupSession.create(GROUP, T0)
    for _ in range(MAX_GROUP_MESSAGES):
        assert not outbound.needs_rotation(T0)
        outbound.encrypt(b"x", T0)
    assert outbound.needs_rotation(T0)
    with pytest.raises(GroupSessionExpired):
        outbound.encrypt(b"one too many", T0)
    assert outbound.message_index == MAX_GROUP_MESSAGES


def test_rotation_after_a_week() -> None:
    outbound = OutboundGroupSession.create(GROUP, T0)
    week = 7 * 24 * 60 * 60 * 1000
    assert week == MAX_GROUP_SESSION_AGE_MS
    assert not outbound.needs_rotation(T0 + week - 1)
    outbound.encrypt(b"still fine", T0 + week - 1)
    assert outbound.needs_rotation(T0 + week)
    with pytest.raises(GroupSessionExpired):
        outbound.encrypt(b"too old", T0 + week)


def test_a_replayed_message_index_is_refused() -> None:
    alice, bob, outbound = alice_and_bob()
    message = outbound.encrypt(b"once", T0)
    assert bob.read(alice, message) == b"once"
    with pytest.raises(ReplayedMessage):
        bob.read(alice, message)
    # A share imported again does not reset what was seen.
    share_with(alice, outbound, [bob])
    with pytest.raises(ReplayedMessage):
        bob.read(alice, message)
    assert bob.read(alice, outbound.encrypt(b"twice", T0)) == b"twice"


def test_a_message_for_another_group_or_sender_is_refused() -> None:
    alice, bob, carol = make_member(1), make_member(2), make_member(3)
    outbound = OutboundGroupSession.create(GROUP, T0)
    share_with(alice, outbound, [bob])
    message = outbound.encrypt(b"hi", T0)
    with pytest.raises(DecryptionFailed):
        bob.inbound.decrypt("group-2", alice.ik, message.session_id, message.ciphertext)
    with pytest.raises(DecryptionFailed):
        bob.inbound.decrypt(GROUP, carol.ik, message.session_id, message.ciphertext)
    with pytest.raises(DecryptionFailed):
        bob.inbound.decrypt(GROUP, alice.ik, message.session_id, b"not megolm")
    assert bob.read(alice, message) == b"hi"


def test_a_share_must_come_from_the_device_it_names() -> None:
    alice, bob, mallory = make_member(1), make_member(2), make_member(3)
    share = OutboundGroupSession.create(GROUP, T0).key_share(alice.device)
    # Relayed by another device's Olm channel.
    with pytest.raises(UntrustedDevice):
        bob.inbound.import_share(share, mallory.ik, alice.keys)
    # Claimed for a device whose keys are not the sender's.
    with pytest.raises(UntrustedDevice):
        bob.inbound.import_share(share, alice.ik, mallory.keys)
    # Tampered: a different key, index or group under alice's signature.
    other = OutboundGroupSession.create(GROUP, T0)
    for tampered in (
        dataclasses.replace(share, session_key=other.key_share(alice.device).session_key),
        dataclasses.replace(share, message_index=1),
        dataclasses.replace(share, group_id="group-2"),
        dataclasses.replace(share, signature=mallory.device.sign(b"x")),
    ):
        with pytest.raises(UntrustedDevice):
            bob.receive_key(tampered, alice)
    # A share whose session id is not its key's.
    with pytest.raises(UntrustedDevice):
        bob.receive_key(
            resign(share, mallory, session_key=other.key_share(mallory.device).session_key), mallory
        )
    assert not bob.inbound.has_session(alice.ik, share.session_id)
    bob.receive_key(share, alice)
    assert bob.inbound.has_session(alice.ik, share.session_id)
    # Alice's share for another group is refused once the session is known.
    with pytest.raises(UntrustedDevice):
        bob.receive_key(resign(share, alice, group_id="group-2"), alice)


def test_a_member_resharing_a_session_as_its_own_cannot_speak_for_the_sender() -> None:
    alice, bob, mallory = make_member(1), make_member(2), make_member(3)
    outbound = OutboundGroupSession.create(GROUP, T0)
    share = share_with(alice, outbound, [mallory])
    bob.receive_key(resign(share, mallory), mallory)
    message = outbound.encrypt(b"from alice", T0)
    with pytest.raises(UnknownGroupSession):
        bob.read(alice, message)
    # Nor does it block alice's own share of the session.
    bob.receive_key(share, alice)
    assert bob.read(alice, message) == b"from alice"


def test_an_earlier_share_widens_an_imported_session() -> None:
    alice, bob = make_member(1), make_member(2)
    outbound = OutboundGroupSession.create(GROUP, T0)
    early = outbound.key_share(alice.device)
    first = outbound.encrypt(b"first", T0)
    share_with(alice, outbound, [bob])
    second = outbound.encrypt(b"second", T0)
    assert bob.read(alice, second) == b"second"
    bob.receive_key(early, alice)
    assert bob.inbound.first_known_index(alice.ik, outbound.session_id) == 0
    assert bob.read(alice, first) == b"first"
    with pytest.raises(ReplayedMessage):
        bob.read(alice, second)


def test_pickles_continue_the_ratchet() -> None:
    alice, bob, outbound = alice_and_bob()
    seen = outbound.encrypt(b"seen", T0)
    assert bob.read(alice, seen) == b"seen"
    assert bob.inbound.dirty_sessions() == {(alice.ik, outbound.session_id)}
    restored_out = OutboundGroupSession.from_pickle(outbound.pickle(KEY), KEY)
    pickled = bob.inbound.pickle_session(alice.ik, outbound.session_id, KEY)
    bob.inbound = InboundGroupSessions()
    assert bob.inbound.load_session(pickled, KEY) == (alice.ik, outbound.session_id)
    assert bob.inbound.dirty_sessions() == set()
    assert (restored_out.group_id, restored_out.created_ms) == (GROUP, T0)
    assert restored_out.session_id == outbound.session_id
    assert restored_out.message_index == 1
    message = restored_out.encrypt(b"after restore", T0)
    assert message.message_index == 1
    assert bob.read(alice, message) == b"after restore"
    with pytest.raises(ReplayedMessage):
        bob.read(alice, seen)


def test_pickles_refuse_a_wrong_key_or_junk() -> None:
    alice, bob, outbound = alice_and_bob()
    wrong = bytes(32)
    with pytest.raises(BadStoreKey):
        OutboundGroupSession.from_pickle(outbound.pickle(KEY), wrong)
    with pytest.raises(BadStoreKey):
        bob.inbound.load_session(
            bob.inbound.pickle_session(alice.ik, outbound.session_id, KEY), wrong
        )
    for junk in ("", "not json", "[]", '{"v": 2}', '{"v": 1}'):
        with pytest.raises(BadStoreKey):
            OutboundGroupSession.from_pickle(junk, KEY)
        with pytest.raises(BadStoreKey):
            bob.inbound.load_session(junk, KEY)
    with pytest.raises(BadStoreKey):
        outbound.pickle(b"short")
    with pytest.raises(UnknownGroupSession):
        bob.inbound.pickle_session(alice.ik, "no such session", KEY)


_ALICE, _BOB = make_member(1), make_member(2)


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=512), min_size=1, max_size=20))
def test_group_round_trip(plaintexts: list[bytes]) -> None:
    outbound = OutboundGroupSession.create(GROUP, T0)
    share_with(_ALICE, outbound, [_BOB])
    for plaintext in plaintexts:
        assert _BOB.read(_ALICE, outbound.encrypt(plaintext, T0)) == plaintext
