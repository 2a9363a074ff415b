"""plauder's cryptography: identities, Olm and Megolm sessions, safety numbers, keys at rest."""

from plauder.crypto.encoding import b64decode, b64encode
from plauder.crypto.errors import (
    BadSignature,
    BadStoreKey,
    CryptoError,
    DecryptionFailed,
    GroupSessionExpired,
    ReplayedMessage,
    UnknownGroupSession,
    UntrustedDevice,
)
from plauder.crypto.groups import (
    MAX_GROUP_MESSAGES,
    MAX_GROUP_SESSION_AGE_MS,
    GroupCiphertext,
    GroupKeyShare,
    GroupPlaintext,
    InboundGroupSessions,
    OutboundGroupSession,
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
    "MAX_GROUP_MESSAGES",
    "MAX_GROUP_SESSION_AGE_MS",
    "AccountKey",
    "BadSignature",
    "BadStoreKey",
    "CryptoError",
    "DecryptionFailed",
    "Device",
    "GroupCiphertext",
    "GroupKeyShare",
    "GroupPlaintext",
    "GroupSessionExpired",
    "InboundGroupSessions",
    "OlmSessions",
    "OutboundGroupSession",
    "ReplayedMessage",
    "StoreCipher",
    "UnknownGroupSession",
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
