"""Media tokens: short-lived, stateless HMAC bearer tokens for one blob's upload or download.

A token is `<expires>.<holder>.<mac>`: its end in server milliseconds, the
device (uploads) or account (downloads) it was issued to, and an unpadded
URL-safe base64 HMAC-SHA256 over the purpose, the blob id, the holder and the
end. The key is derived from the server secret, which every node of a cluster
shares, so any node checks a token another issued without asking anyone.
"""

import base64
import hashlib
import hmac
import re
from enum import StrEnum

_TOKEN = re.compile(r"([0-9]{1,19})\.([0-9]{1,19})\.([A-Za-z0-9_-]{43})")


class Purpose(StrEnum):
    """What a token allows: appending to an upload, or reading a complete blob."""

    PUT = "put"
    GET = "get"


class MediaTokens:
    """Issues and checks media tokens under a key derived from the server secret."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"plauder media tokens", hashlib.sha256).digest()

    def issue(self, purpose: Purpose, media: str, holder: int, expires_ms: int) -> str:
        """A token for one purpose on one blob, valid until expires_ms."""
        return f"{expires_ms}.{holder}.{self._mac(purpose, media, holder, expires_ms)}"

    def check(self, token: str, purpose: Purpose, media: str, now_ms: int) -> int | None:
        """The holder of a token valid now for this purpose and blob; None otherwise."""
        found = _TOKEN.fullmatch(token) if token.isascii() else None
        if found is None:
            return None
        expires, holder = int(found[1]), int(found[2])
        expected = self._mac(purpose, media, holder, expires)
        if not hmac.compare_digest(expected.encode(), found[3].encode()) or now_ms >= expires:
            return None
        return holder

    def _mac(self, purpose: Purpose, media: str, holder: int, expires_ms: int) -> str:
        signed = f"plauder-media-token-v1\0{purpose}\0{media}\0{holder}\0{expires_ms}".encode()
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
