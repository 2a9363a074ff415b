"""Safety numbers: what two users compare to check each other's account keys."""

import hashlib

from plauder.crypto.encoding import b64decode

_VERSION = (0).to_bytes(2, "big")
_ITERATIONS = 5200
_QR_PREFIX = "plauder-safety-v1:"


def _fingerprint(number: str, key: str) -> str:
    """Return one side's 30-digit half of the safety number."""
    key_bytes = b64decode(key)
    digest = _VERSION + key_bytes + number.encode()
    for _ in range(_ITERATIONS):
        digest = hashlib.sha512(digest + key_bytes).digest()
    chunks = (int.from_bytes(digest[i : i + 5], "big") % 100000 for i in range(0, 30, 5))
    return "".join(f"{chunk:05d}" for chunk in chunks)


def safety_number(local_number: str, local_key: str, remote_number: str, remote_key: str) -> str:
    """Return the 60-digit safety number of two accounts, the same on both sides."""
    local = _fingerprint(local_number, local_key)
    remote = _fingerprint(remote_number, remote_key)
    return local + remote if local <= remote else remote + local


def format_safety_number(digits: str) -> str:
    """Split a safety number into groups of five digits separated by spaces."""
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))


def safety_qr_payload(
    local_number: str, local_key: str, remote_number: str, remote_key: str
) -> str:
    """Return the text of a QR code that lets the other side check the safety number."""
    return _QR_PREFIX + safety_number(local_number, local_key, remote_number, remote_key)
