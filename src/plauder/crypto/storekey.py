"""Keys at rest: passphrase derivation and authenticated sealing of the client store."""

import secrets

from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from plauder.crypto.errors import BadStoreKey, CryptoError

KEY_SIZE = 32
SALT_SIZE = 16
_NONCE_SIZE = 12
_TAG_SIZE = 16
_VERIFIER = b"plauder-store-verifier-v1"
_VERIFIER_AAD = b"plauder-verifier"


def new_key() -> bytes:
    """Return a fresh random 32-byte store key."""
    return secrets.token_bytes(KEY_SIZE)


def new_salt() -> bytes:
    """Return a fresh random 16-byte salt for derive_key."""
    return secrets.token_bytes(SALT_SIZE)


def derive_key(passphrase: str, salt: bytes) -> bytes:
    """Derive a 32-byte store key from a passphrase with argon2id."""
    try:
        return hash_secret_raw(
            secret=passphrase.encode(),
            salt=salt,
            time_cost=3,
            memory_cost=65536,
            parallelism=1,
            hash_len=KEY_SIZE,
            type=Type.ID,
        )
    except HashingError as exc:
        raise CryptoError("argon2id key derivation failed") from exc


def _subkey(master_key: bytes, info: bytes) -> bytes:
    """Derive a 32-byte subkey for one purpose."""
    return HKDF(algorithm=SHA256(), length=KEY_SIZE, salt=None, info=info).derive(master_key)


class StoreCipher:
    """Authenticated encryption of store data and the pickle key, from one master key."""

    def __init__(self, master_key: bytes) -> None:
        """Derive the subkeys from a 32-byte master key."""
        if len(master_key) != KEY_SIZE:
            raise BadStoreKey("a store key is 32 bytes")
        self._pickle_key = _subkey(master_key, b"plauder-pickle-v1")
        self._aead = ChaCha20Poly1305(_subkey(master_key, b"plauder-seal-v1"))

    @property
    def pickle_key(self) -> bytes:
        """The 32-byte key for vodozemac pickles."""
        return self._pickle_key

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt and authenticate plaintext bound to aad."""
        nonce = secrets.token_bytes(_NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Decrypt sealed data; raise BadStoreKey if the key or data is wrong."""
        if len(sealed) < _NONCE_SIZE + _TAG_SIZE:
            raise BadStoreKey("sealed data is too short")
        try:
            return self._aead.decrypt(sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:], aad)
        except InvalidTag as exc:
            raise BadStoreKey("wrong store key or tampered data") from exc

    def verifier(self) -> bytes:
        """Return a sealed constant that check() accepts only with the same key."""
        return self.seal(_VERIFIER, _VERIFIER_AAD)

    def check(self, verifier: bytes) -> None:
        """Raise BadStoreKey unless the verifier was made with this key."""
        if self.open(verifier, _VERIFIER_AAD) != _VERIFIER:
            raise BadStoreKey("wrong store key")
