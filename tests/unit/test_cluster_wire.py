"""What nodes tell each other over Redis: every message kind survives the trip, compactly."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plauder.server.cluster import wire

EIDS = st.integers(min_value=1, max_value=2**63 - 1)


@given(eid=EIDS, data=st.binary(max_size=2048))
def test_stored_round_trip(eid: int, data: bytes) -> None:
    message = wire.Stored(eid=eid, data=data)
    encoded = wire.encode(message)
    assert wire.decode_device(encoded) == message
    assert len(encoded) <= len(data) + 15  # kind, eid and a bin header around the frame


@pytest.mark.parametrize(
    "message",
    [
        wire.Ephemeral(data=b"\x81\xa1t\xa8envelope"),
        wire.Takeover(gen=1_763_800_000_123_456, node="node-a"),
        wire.Evict(),
        wire.Resync(),
    ],
)
def test_every_kind_round_trips(message: wire.DeviceMessage) -> None:
    assert wire.decode_device(wire.encode(message)) == message


def test_kinds_are_told_apart_by_their_first_element() -> None:
    assert wire.encode(wire.Evict()) == b"\x91\x03"
    assert wire.encode(wire.Resync()) == b"\x91\x04"
    assert wire.encode(wire.Stored(eid=5, data=b"x"))[:3] == b"\x93\x00\x05"


@given(number=st.text(min_size=1, max_size=20), changed=st.booleans())
def test_presence_note_round_trip(number: str, changed: bool) -> None:
    note = wire.PresenceNote(node="b", number=number, changed_visibility=changed)
    assert wire.decode_presence(wire.encode(note)) == note


@pytest.mark.parametrize(
    "garbage", [b"", b"\xc1", b"\x91\x09", b"\x92\x00\x05", b"\x93\x00\xa1x\xc4\x00", b"\x80"]
)
def test_garbage_is_a_decode_error(garbage: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        wire.decode_device(garbage)
    with pytest.raises(msgspec.DecodeError):
        wire.decode_presence(garbage)


def test_names_live_under_the_namespace() -> None:
    names = wire.Names("prod")
    assert names.device_channel(42) == b"prod:d:42"
    assert names.device_channel(42).startswith(names.device_prefix)
    assert names.device_key(42) == "prod:dev:42"
    assert names.online("a") == "prod:online:a" == names.online_prefix + "a"
    assert names.limit("code", "+4915100000001") == "prod:limit:code:+4915100000001"
    assert (names.presence, names.generation, names.nodes) == (
        b"prod:presence",
        "prod:gen",
        "prod:nodes",
    )
