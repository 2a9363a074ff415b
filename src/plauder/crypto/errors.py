"""Exceptions raised by plauder's cryptography layer."""

from plauder.errors import PlauderError


class CryptoError(PlauderError):
    """A cryptographic operation failed."""


class BadSignature(CryptoError):
    """A signature, or the key or encoding it came with, did not verify."""


class DecryptionFailed(CryptoError):
    """A ciphertext could not be decrypted."""


class UntrustedDevice(CryptoError):
    """A device or pre-key is not signed by the key that should vouch for it."""


class BadStoreKey(CryptoError):
    """The store key or passphrase is wrong, or sealed data was tampered with."""
