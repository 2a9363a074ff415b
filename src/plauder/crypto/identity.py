"""Account and device keys: signing payloads, signatures and the vodozemac account."""

from __future__ import annotations

from typing import Protocol, cast

import vodozemac
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from plauder.crypto.encoding import b64decode, b64encode
from plauder.crypto.errors import BadSignature, BadStoreKey, CryptoError, UntrustedDevice
from plauder.protocol.frames import DeviceKeys, SignedKey

_KEY_SIZE = 32


def device_payload(identity_key: str, signing_key: str) -> bytes:
    """Return the bytes an account key signs to vouch for a device."""
    return b"plauder-device-v1\x00" + signing_key.encode() + b"\x00" + identity_key.encode()


def auth_payload(challenge: bytes, number: str, device_id: int) -> bytes:
    """Return the bytes a device signs to authenticate a connection."""
    return (
        b"plauder-auth-v1\x00"
        + challenge
        + b"\x00"
        + number.encode()
        + b"\x00"
        + str(device_id).encode()
    )


def prekey_payload(key: str) -> bytes:
    """Return the bytes a device signs to vouch for one of its pre-keys."""
    return b"plauder-prekey-v1\x00" + key.encode()


def verify_signature(public_key: str, data: bytes, signature: str) -> None:
    """Check an Ed25519 signature; raise BadSignature if it or its inputs are invalid."""
    try:
        key = Ed25519PublicKey.from_public_bytes(b64decode(public_key))
        key.verify(b64decode(signature), data)
    except (ValueError, InvalidSignature) as exc:
        raise BadSignature("Ed25519 signature does not verify") from exc


class AccountKey:
    """An account's Ed25519 identity key, which signs the account's devices."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        """Wrap an Ed25519 private key."""
        self._key = private_key

    @classmethod
    def generate(cls) -> AccountKey:
        """Create a fresh random account key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> AccountKey:
        """Load an account key from its 32-byte seed."""
        if len(data) != _KEY_SIZE:
            raise ValueError("an account key seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        """Return the 32-byte seed of the key."""
        return self._key.private_bytes_raw()

    @property
    def public_key(self) -> str:
        """The public key as unpadded base64."""
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return b64encode(raw)

    def sign(self, data: bytes) -> str:
        """Sign data and return the signature as unpadded base64."""
        return b64encode(self._key.sign(data))

    def sign_device(self, identity_key: str, signing_key: str, device_id: int) -> DeviceKeys:
        """Vouch for a device's keys with this account key."""
        signature = self.sign(device_payload(identity_key, signing_key))
        return DeviceKeys(
            device_id=device_id,
            identity_key=identity_key,
            signing_key=signing_key,
            signature=signature,
        )


def verify_device(account_key: str, device: DeviceKeys) -> None:
    """Raise UntrustedDevice unless the account key signed the device's keys."""
    payload = device_payload(device.identity_key, device.signing_key)
    try:
        verify_signature(account_key, payload, device.signature)
    except BadSignature as exc:
        raise UntrustedDevice(f"device {device.device_id} is not signed by the account") from exc


def verify_prekey(device: DeviceKeys, prekey: SignedKey) -> None:
    """Raise UntrustedDevice unless the device signed the pre-key."""
    try:
        verify_signature(device.signing_key, prekey_payload(prekey.key), prekey.signature)
    except BadSignature as exc:
        raise UntrustedDevice(f"pre-key {prekey.key_id} is not signed by the device") from exc


class _FallbackKeys(Protocol):
    """The fallback-key part of vodozemac.Account that its type stubs leave out."""

    @property
    def fallback_key(self) -> dict[str, vodozemac.Curve25519PublicKey]:
        """The unpublished fallback key, by key id."""

    def generate_fallback_key(self) -> vodozemac.Curve25519PublicKey | None:
        """Replace the fallback key, keeping the previous one for late messages."""


class Device:
    """One device's Olm account: its Curve25519 identity key, Ed25519 key and pre-keys."""

    def __init__(self, account: vodozemac.Account) -> None:
        """Wrap a vodozemac account."""
        self.olm = account

    @classmethod
    def create(cls) -> Device:
        """Create a device with fresh keys."""
        return cls(vodozemac.Account())

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> Device:
        """Restore a device from its pickle; raise BadStoreKey if the key is wrong."""
        _check_pickle_key(key)
        try:
            return cls(vodozemac.Account.from_pickle(pickle, key))
        except ValueError as exc:
            raise BadStoreKey("cannot unpickle the device account") from exc

    def pickle(self, key: bytes) -> str:
        """Serialise the device, encrypted with a 32-byte key."""
        _check_pickle_key(key)
        return self.olm.pickle(key)

    @property
    def identity_key(self) -> str:
        """The Curve25519 identity key as unpadded base64."""
        return self.olm.curve25519_key.to_base64()

    @property
    def signing_key(self) -> str:
        """The Ed25519 signing key as unpadded base64."""
        return self.olm.ed25519_key.to_base64()

    def sign(self, data: bytes) -> str:
        """Sign data with the device's Ed25519 key; return unpadded base64."""
        return self.olm.sign(data).to_base64()

    def new_one_time_keys(self, count: int) -> list[SignedKey]:
        """Generate, sign and mark as published `count` one-time keys."""
        if count < 0:
            raise ValueError("count must not be negative")
        if count == 0:
            return []
        self.olm.generate_one_time_keys(count)
        keys = self._signed(self.olm.one_time_keys, fallback=False)
        self.olm.mark_keys_as_published()
        return keys

    def new_fallback_key(self) -> SignedKey:
        """Generate, sign and mark as published a new fallback key."""
        account = cast(_FallbackKeys, self.olm)
        account.generate_fallback_key()
        keys = self._signed(account.fallback_key, fallback=True)
        self.olm.mark_keys_as_published()
        if len(keys) != 1:
            raise CryptoError("vodozemac did not produce a fallback key")
        return keys[0]

    def _signed(
        self, keys: dict[str, vodozemac.Curve25519PublicKey], *, fallback: bool
    ) -> list[SignedKey]:
        """Sign each public key with the device's Ed25519 key."""
        signed = []
        for key_id, public in keys.items():
            key = public.to_base64()
            signature = self.sign(prekey_payload(key))
            signed.append(SignedKey(key_id=key_id, key=key, signature=signature, fallback=fallback))
        return signed


def _check_pickle_key(key: bytes) -> None:
    """Raise BadStoreKey unless the pickle key has the size vodozemac needs."""
    if len(key) != _KEY_SIZE:
        raise BadStoreKey("a pickle key is 32 bytes")
