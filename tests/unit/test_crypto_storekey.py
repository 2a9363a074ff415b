"""Tests of plauder.crypto.storekey."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plauder.crypto import BadStoreKey, StoreCipher, derive_key, new_key, new_salt

CIPHER = StoreCipher(bytes(range(32)))


def test_new_key_and_salt() -> None:
    assert len(new_key()) == 32
    assert len(new_salt()) == 16
    assert new_key() != new_key()
    assert new_salt() != new_salt()


def test_derive_key_is_deterministic_per_passphrase_and_salt() -> None:
    salt = bytes(16)
    key = derive_key("correct horse battery staple", salt)
    assert len(key) == 32
    assert derive_key("correct horse battery staple", salt) == key
    assert StoreCipher(key).pickle_key != key


def test_seal_round_trip_with_aad() -> None:
    sealed = CIPHER.seal(b"secret", b"table:contacts")
    assert b"secret" not in sealed
    assert CIPHER.seal(b"secret", b"table:contacts") != sealed
    assert CIPHER.open(sealed, b"table:contacts") == b"secret"
    with pytest.raises(BadStoreKey):
        CIPHER.open(sealed, b"table:messages")


def test_wrong_key_raises() -> None:
    sealed = CIPHER.seal(b"secret")
    other = StoreCipher(new_key())
    with pytest.raises(BadStoreKey):
        other.open(sealed)
    with pytest.raises(BadStoreKey):
        other.check(CIPHER.verifier())
    CIPHER.check(CIPHER.verifier())
    with pytest.raises(BadStoreKey):
        StoreCipher(b"too short")


def test_tampered_byte_raises() -> None:
    sealed = CIPHER.seal(b"secret data")
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(BadStoreKey):
            CIPHER.open(bytes(tampered))
    for truncated in (b"", sealed[:27], sealed[:-1]):
        with pytest.raises(BadStoreKey):
            CIPHER.open(truncated)


def test_pickle_key_differs_from_seal_key_and_per_master_key() -> None:
    assert len(CIPHER.pickle_key) == 32
    assert StoreCipher(bytes(range(32))).pickle_key == CIPHER.pickle_key
    assert StoreCipher(new_key()).pickle_key != CIPHER.pickle_key


@given(st.binary(), st.binary(max_size=64))
def test_seal_open_round_trip(plaintext: bytes, aad: bytes) -> None:
    assert CIPHER.open(CIPHER.seal(plaintext, aad), aad) == plaintext
