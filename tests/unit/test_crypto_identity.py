"""Tests of plauder.crypto.identity: account keys, device keys and pre-keys."""

import pytest
from msgspec.structs import replace

from plauder.crypto import (
    AccountKey,
    BadSignature,
    BadStoreKey,
    Device,
    UntrustedDevice,
    auth_payload,
    b64decode,
    b64encode,
    device_payload,
    prekey_payload,
    verify_device,
    verify_prekey,
    verify_signature,
)
from plauder.protocol.frames import SignedKey

KEY = bytes(range(32))


def test_payloads_are_exact() -> None:
    assert device_payload("ID", "SIG") == b"plauder-device-v1\x00SIG\x00ID"
    assert auth_payload(b"\x01\x02", "+491701234567", 3) == (
        b"plauder-auth-v1\x00\x01\x02\x00+491701234567\x003"
    )
    assert prekey_payload("K") == b"plauder-prekey-v1\x00K"


def test_account_key_signs_and_round_trips() -> None:
    key = AccountKey.generate()
    assert len(b64decode(key.public_key)) == 32
    signature = key.sign(b"hello")
    verify_signature(key.public_key, b"hello", signature)
    seed = key.private_bytes()
    assert len(seed) == 32
    again = AccountKey.from_private_bytes(seed)
    assert again.public_key == key.public_key
    verify_signature(key.public_key, b"hello", again.sign(b"hello"))
    with pytest.raises(ValueError):
        AccountKey.from_private_bytes(seed[:31])


def test_verify_signature_rejects_wrong_and_malformed_inputs() -> None:
    key = AccountKey.generate()
    other = AccountKey.generate()
    signature = key.sign(b"data")
    bad_inputs = [
        (key.public_key, b"datA", signature),
        (other.public_key, b"data", signature),
        (key.public_key, b"data", other.sign(b"data")),
        ("not base64!", b"data", signature),
        (b64encode(b"short"), b"data", signature),
        (key.public_key, b"data", "***"),
        (key.public_key, b"data", b64encode(b64decode(signature)[:63])),
        (key.public_key, b"data", ""),
    ]
    for public_key, data, sig in bad_inputs:
        with pytest.raises(BadSignature):
            verify_signature(public_key, data, sig)


def test_device_signature_verifies_with_cryptography() -> None:
    device = Device.create()
    payload = auth_payload(b"challenge", "+15550001", 1)
    verify_signature(device.signing_key, payload, device.sign(payload))
    with pytest.raises(BadSignature):
        verify_signature(device.signing_key, payload + b"x", device.sign(payload))


def test_verify_device_accepts_and_rejects() -> None:
    alice, mallory = AccountKey.generate(), AccountKey.generate()
    device = Device.create()
    keys = alice.sign_device(device.identity_key, device.signing_key, 7)
    assert keys.device_id == 7
    assert keys.identity_key == device.identity_key
    assert keys.signing_key == device.signing_key
    verify_device(alice.public_key, keys)

    forged = mallory.sign_device(device.identity_key, device.signing_key, 7)
    with pytest.raises(UntrustedDevice):
        verify_device(alice.public_key, forged)

    other = Device.create()
    for tampered in (
        replace(keys, identity_key=other.identity_key),
        replace(keys, signing_key=other.signing_key),
        replace(keys, signature="garbage"),
    ):
        with pytest.raises(UntrustedDevice):
            verify_device(alice.public_key, tampered)
    with pytest.raises(UntrustedDevice):
        verify_device("garbage", keys)


def test_one_time_keys_are_signed_and_unique() -> None:
    device = Device.create()
    account = AccountKey.generate()
    keys = account.sign_device(device.identity_key, device.signing_key, 1)
    first = device.new_one_time_keys(10)
    second = device.new_one_time_keys(5)
    assert len(first) == 10
    assert len(second) == 5
    assert len({k.key_id for k in first + second}) == 15
    assert len({k.key for k in first + second}) == 15
    for prekey in first + second:
        assert not prekey.fallback
        assert len(b64decode(prekey.key)) == 32
        verify_prekey(keys, prekey)
    assert device.new_one_time_keys(0) == []
    with pytest.raises(ValueError):
        device.new_one_time_keys(-1)


def test_fallback_key_is_signed() -> None:
    device = Device.create()
    keys = AccountKey.generate().sign_device(device.identity_key, device.signing_key, 1)
    fallback = device.new_fallback_key()
    assert fallback.fallback
    verify_prekey(keys, fallback)
    replacement = device.new_fallback_key()
    assert replacement.key != fallback.key
    verify_prekey(keys, replacement)


def test_verify_prekey_rejects_foreign_or_tampered_keys() -> None:
    device, other = Device.create(), Device.create()
    keys = AccountKey.generate().sign_device(device.identity_key, device.signing_key, 1)
    [prekey] = device.new_one_time_keys(1)
    [foreign] = other.new_one_time_keys(1)
    with pytest.raises(UntrustedDevice):
        verify_prekey(keys, foreign)
    with pytest.raises(UntrustedDevice):
        verify_prekey(keys, replace(prekey, key=foreign.key))
    with pytest.raises(UntrustedDevice):
        verify_prekey(keys, SignedKey(key_id="x", key=prekey.key, signature="!!"))


def test_device_pickle_round_trip() -> None:
    device = Device.create()
    device.new_one_time_keys(3)
    pickle = device.pickle(KEY)
    restored = Device.from_pickle(pickle, KEY)
    assert restored.identity_key == device.identity_key
    assert restored.signing_key == device.signing_key
    verify_signature(device.signing_key, b"x", restored.sign(b"x"))


def test_device_pickle_with_wrong_key_fails() -> None:
    pickle = Device.create().pickle(KEY)
    with pytest.raises(BadStoreKey):
        Device.from_pickle(pickle, bytes(32))
    with pytest.raises(BadStoreKey):
        Device.from_pickle(pickle, KEY[:16])
    with pytest.raises(BadStoreKey):
        Device.from_pickle("garbage", KEY)
    with pytest.raises(BadStoreKey):
        Device.create().pickle(b"short")
