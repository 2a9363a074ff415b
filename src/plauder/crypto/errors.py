"""Exceptions raised by plauder's cryptography layer.

CryptoError
├── BadSignature
├── DecryptionFailed
│   ├── UnknownGroupSession
│   └── ReplayedMessage
├── UntrustedDevice
├── BadStoreKey
└── GroupSessionExpired
"""

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


class UnknownGroupSession(DecryptionFailed):
    """A group message names a Megolm session whose key this device was never given."""


class ReplayedMessage(DecryptionFailed):
    """A group message with a (session id, message index) already decrypted was seen again."""


class GroupSessionExpired(CryptoError):
    """An outbound Megolm session reached its message or age limit and must be replaced."""
