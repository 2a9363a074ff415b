"""plauder's cryptography: identities, Olm sessions, safety numbers and keys at rest."""

from plauder.crypto.encoding import b64decode, b64encode
from plauder.crypto.errors import (
    BadSignature,
    BadStoreKey,
    CryptoError,
    DecryptionFailed,
    UntrustedDevice,
)
from plauder.crypto.identity import (
    AccountKey,
    Device,
    auth_payload,
    device_payload,
    prekey_payload,
    verify_device,
    verify_prekey,
    verify_signature,
)
from plauder.crypto.safety import format_safety_number, safety_number, safety_qr_payload
from plauder.crypto.sessions import OlmSessions
from plauder.crypto.storekey import StoreCipher, derive_key, new_key, new_salt

__all__ = [
    "AccountKey",
    "BadSignature",
    "BadStoreKey",
    "CryptoError",
    "DecryptionFailed",
    "Device",
    "OlmSessions",
    "StoreCipher",
    "UntrustedDevice",
    "auth_payload",
    "b64decode",
    "b64encode",
    "derive_key",
    "device_payload",
    "format_safety_number",
    "new_key",
    "new_salt",
    "prekey_payload",
    "safety_number",
    "safety_qr_payload",
    "verify_device",
    "verify_prekey",
    "verify_signature",
]
