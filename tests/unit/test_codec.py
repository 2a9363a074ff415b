"""The codec: every frame round-trips, and no input makes it fail other than as designed."""

import types
import typing
from typing import Any, Literal

import msgspec
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from plauder.protocol import codec
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import (
    ClientFrame,
    Envelope,
    Error,
    Hello,
    Ping,
    Pong,
    Send,
    ServerFrame,
)

CLIENT_TYPES: tuple[type[msgspec.Struct], ...] = typing.get_args(ClientFrame)
SERVER_TYPES: tuple[type[msgspec.Struct], ...] = typing.get_args(ServerFrame)
DECODE_ERRORS = {ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_FRAME, ErrorCode.FRAME_TOO_LARGE}
BIG = 1 << 30

# no deadline (a busy machine is not a bug) and no explain phase (slow, and the
# failing example says enough)
CODEC = settings(deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])

# msgpack carries integers from -2**63 to 2**64 - 1
wire_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a frame field's type that msgpack can carry."""
    origin = typing.get_origin(tp)
    if tp is int:
        return wire_ints
    if tp is str:
        return st.text(max_size=40)
    if tp is bytes:
        return st.binary(max_size=64)
    if tp is bool:
        return st.booleans()
    if tp is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(strategy_for(item), max_size=3)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in typing.get_args(tp)])
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return struct_strategy(tp)
    raise AssertionError(f"no strategy for {tp!r}")


def struct_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    """Instances of a Struct, every field drawn from its declared type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name]) for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **fields)


client_frames = st.one_of([struct_strategy(cls) for cls in CLIENT_TYPES])
server_frames = st.one_of([struct_strategy(cls) for cls in SERVER_TYPES])


def builtins(frame: msgspec.Struct) -> dict[str, Any]:
    """A frame as the msgpack map it travels as (bytes stay bytes)."""
    data: dict[str, Any] = msgspec.msgpack.decode(codec.encode(frame))  # type: ignore[arg-type]
    return data


# --- round trips ------------------------------------------------------------------------


def test_strategies_cover_every_frame_type() -> None:
    assert len(CLIENT_TYPES) == 27
    assert len(SERVER_TYPES) == 19


@pytest.mark.parametrize("cls", CLIENT_TYPES, ids=lambda c: c.__name__)
@settings(CODEC, max_examples=25)
@given(data=st.data())
def test_every_client_frame_round_trips(cls: type[msgspec.Struct], data: st.DataObject) -> None:
    frame = data.draw(struct_strategy(cls))
    decoded = codec.decode_client(codec.encode(frame), BIG)  # type: ignore[arg-type]
    assert type(decoded) is cls
    assert decoded == frame


@pytest.mark.parametrize("cls", SERVER_TYPES, ids=lambda c: c.__name__)
@settings(CODEC, max_examples=25)
@given(data=st.data())
def test_every_server_frame_round_trips(cls: type[msgspec.Struct], data: st.DataObject) -> None:
    frame = data.draw(struct_strategy(cls))
    decoded = codec.decode_server(codec.encode(frame))  # type: ignore[arg-type]
    assert type(decoded) is cls
    assert decoded == frame


@CODEC
@given(server_frames)
def test_a_server_frame_is_not_a_client_request(frame: Any) -> None:
    with pytest.raises(codec.ProtocolError) as info:
        codec.decode_client(codec.encode(frame), BIG)
    assert info.value.code == ErrorCode.UNKNOWN_FRAME


# --- arbitrary input --------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none() | st.booleans() | wire_ints | st.floats() | st.text(max_size=10) | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | wire_ints, inner, max_size=4)
    ),
    max_leaves=12,
)
tags = st.sampled_from(
    [cls.__struct_config__.tag for cls in (*CLIENT_TYPES, *SERVER_TYPES)] + ["", "nope"]
)
frame_like_maps = st.builds(
    lambda t, id_, rest: {**rest, "t": t, "id": id_},
    tags | msgpack_values,
    wire_ints | st.booleans() | msgpack_values,
    st.dictionaries(st.text(max_size=12), msgpack_values, max_size=5),
)
arbitrary_bytes = st.one_of(
    st.binary(max_size=200),
    msgpack_values.map(msgspec.msgpack.encode),
    frame_like_maps.map(msgspec.msgpack.encode),
    client_frames.map(codec.encode).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda n: b[:n])  # truncated frames
    ),
)


def decodes_or_fails_cleanly(data: bytes, max_bytes: int) -> None:
    """Decoding either succeeds or raises ProtocolError with a decode error code."""
    for decode in (codec.decode_client, codec.decode_server):
        try:
            decode(data, max_bytes)
        except codec.ProtocolError as exc:
            assert exc.code in DECODE_ERRORS


def error_answer_is_a_valid_frame(data: bytes) -> None:
    """The `error` frame a server builds from a decode failure is itself a valid frame."""
    try:
        codec.decode_client(data, BIG)
    except codec.ProtocolError as exc:
        assert type(exc.request_id) is int and 0 <= exc.request_id < 2**63, exc.request_id
        answer = Error(id=exc.request_id, code=exc.code.value, message=exc.message)
        assert codec.decode_server(codec.encode(answer)) == answer


@settings(CODEC, max_examples=400)
@given(arbitrary_bytes, st.sampled_from([BIG, 64, 16]))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes, max_bytes: int) -> None:
    decodes_or_fails_cleanly(data, max_bytes)


@settings(CODEC, max_examples=200)
@given(frame_like_maps.map(msgspec.msgpack.encode))
def test_the_error_answer_to_any_malformed_frame_is_a_valid_frame(data: bytes) -> None:
    error_answer_is_a_valid_frame(data)


def test_too_large_frame_is_frame_too_large_at_one_byte_over() -> None:
    data = codec.encode(Ping(id=1))
    assert codec.decode_client(data, len(data)) == Ping(id=1)
    with pytest.raises(codec.ProtocolError) as info:
        codec.decode_client(data, len(data) - 1)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize("field", ["t", "id", "other"])
def test_deeply_nested_input_is_bad_frame(field: str) -> None:
    # 2 KB of nested one-element arrays as the value of a field
    data = b"\x81" + msgspec.msgpack.encode(field) + b"\x91" * 2000 + b"\xc0"
    decodes_or_fails_cleanly(data, BIG)
    with pytest.raises(codec.ProtocolError):
        codec.decode_client(data, BIG)


@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_id_is_not_a_request_id(flag: bool) -> None:
    # msgpack `true` is not the integer 1: the answer must carry an integer id
    data = msgspec.msgpack.encode({"t": "send", "id": flag, "cmid": "x", "envelopes": []})
    with pytest.raises(codec.ProtocolError) as info:
        codec.decode_client(data, BIG)
    assert info.value.code == ErrorCode.BAD_FRAME
    error_answer_is_a_valid_frame(data)


# --- request ids of malformed frames ----------------------------------------------------


def corruptible(frame: msgspec.Struct) -> bool:
    """Frames with a request id and another field to spoil."""
    names = {f.name for f in msgspec.structs.fields(type(frame))}
    return "id" in names and len(names) > 1


@CODEC
@given(client_frames.filter(corruptible), st.data())
def test_request_id_is_recovered_from_a_malformed_frame(frame: Any, data: st.DataObject) -> None:
    request_id = data.draw(st.integers(0, 2**63 - 1))
    fields = builtins(msgspec.structs.replace(frame, id=request_id))
    names = sorted(f.name for f in msgspec.structs.fields(type(frame)) if f.name != "id")
    spoilt = data.draw(st.sampled_from(names))
    # wrong for any field type (a map alone would pass as a struct: unknown keys are ignored)
    fields[spoilt] = [{"not": ["what", "was", "expected"]}, 1.5]
    with pytest.raises(codec.ProtocolError) as info:
        codec.decode_client(msgspec.msgpack.encode(fields), BIG)
    assert info.value.code == ErrorCode.BAD_FRAME
    assert info.value.request_id == request_id


@CODEC
@given(st.integers(0, 2**63 - 1), st.text(min_size=1).filter(lambda t: t not in codec._CLIENT_TAGS))
def test_request_id_is_recovered_from_an_unknown_frame(request_id: int, tag: str) -> None:
    with pytest.raises(codec.ProtocolError) as info:
        codec.decode_client(msgspec.msgpack.encode({"t": tag, "id": request_id}), BIG)
    assert info.value.code == ErrorCode.UNKNOWN_FRAME
    assert info.value.request_id == request_id


@pytest.mark.parametrize(
    ("fields", "expected_id"),
    [
        ({"t": "send", "id": 7, "cmid": "a string", "envelopes": []}, 7),
        ({"t": "send", "id": -1, "cmid": "a string", "envelopes": []}, 0),
        ({"t": "send", "id": 2**63, "cmid": "a string", "envelopes": []}, 0),
        ({"t": "send", "id": "7", "cmid": b"12345678", "envelopes": []}, 0),
        ({"t": "send", "id": 7.0, "cmid": b"12345678", "envelopes": []}, 0),
        ({"t": 5, "id": 9}, 9),
        ({"id": 11}, 11),
    ],
)
def test_request_id_of_malformed_frames(fields: dict[str, Any], expected_id: int) -> None:
    with pytest.raises(codec.ProtocolError) as info:
        codec.decode_client(msgspec.msgpack.encode(fields), BIG)
    assert info.value.code == ErrorCode.BAD_FRAME
    assert info.value.request_id == expected_id


def test_frames_that_are_not_maps_have_no_request_id() -> None:
    for value in ([("t", "ping"), ("id", 3)], "ping", 3, None):
        with pytest.raises(codec.ProtocolError) as info:
            codec.decode_client(msgspec.msgpack.encode(value), BIG)
        assert (info.value.code, info.value.request_id) == (ErrorCode.BAD_FRAME, 0)


def test_known_frames_decode_to_their_types() -> None:
    assert codec.decode_client(codec.encode(Hello(v=1)), BIG) == Hello(v=1)
    send = Send(id=3, cmid=b"\x00" * 16, envelopes=[])
    assert codec.decode_client(codec.encode(send), BIG) == send
    pong = Pong(id=4, server_time=5)
    assert codec.decode_server(codec.encode(pong)) == pong


@CODEC
@given(struct_strategy(Envelope), st.lists(st.integers(0, 2**63 - 1), max_size=5))
def test_envelope_encoder_matches_encoding_each_envelope(
    template: Envelope, eids: list[int]
) -> None:
    frame = codec.envelope_encoder(template)
    for eid in eids:
        assert frame(eid) == codec.encode(msgspec.structs.replace(template, eid=eid))
