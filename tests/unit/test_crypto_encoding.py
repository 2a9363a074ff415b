"""Tests of plauder.crypto.encoding."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plauder.crypto import b64decode, b64encode


def test_encode_is_unpadded_standard_base64() -> None:
    assert b64encode(b"") == ""
    assert b64encode(b"a") == "YQ"
    assert b64encode(b"ab") == "YWI"
    assert b64encode(b"abc") == "YWJj"
    assert b64encode(b"\xfb\xff") == "+/8"


def test_decode_accepts_padded_and_unpadded() -> None:
    assert b64decode("YQ") == b"a"
    assert b64decode("YQ==") == b"a"
    assert b64decode("YWI=") == b"ab"
    assert b64decode("+/8") == b"\xfb\xff"


@pytest.mark.parametrize("garbage", ["Y", "YQ=", "Y=Q=", "YQ!!", "-_8", "YWJj\n", "ä", "YQ==="])
def test_decode_rejects_garbage(garbage: str) -> None:
    with pytest.raises(ValueError):
        b64decode(garbage)


@given(st.binary())
def test_round_trip(data: bytes) -> None:
    text = b64encode(data)
    assert "=" not in text
    assert b64decode(text) == data
