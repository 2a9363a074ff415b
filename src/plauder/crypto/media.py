"""Encryption of a file's bytes for media blobs: libsodium's secretstream, one fresh key per file.

A blob is the 24-byte secretstream header, then the file in chunks of
CHUNK_SIZE plaintext bytes, each sealed (XChaCha20-Poly1305, ABYTES longer);
the last chunk, shorter or as long as the others, carries TAG_FINAL (an empty
file is one empty final chunk). Both sides stream with bounded memory.

MediaError (a DecryptionFailed)
├── MediaBadDescription   the key, sizes or digests describing the blob are malformed
├── MediaTampered         a chunk failed authentication (altered bytes or a wrong key)
├── MediaTruncated        the blob ended before its final chunk
└── MediaMismatch         the blob or the file is not the one described (length, SHA-256)
"""

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_ABYTES,
    crypto_secretstream_xchacha20poly1305_HEADERBYTES,
    crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_init_push,
    crypto_secretstream_xchacha20poly1305_KEYBYTES,
    crypto_secretstream_xchacha20poly1305_keygen,
    crypto_secretstream_xchacha20poly1305_pull,
    crypto_secretstream_xchacha20poly1305_push,
    crypto_secretstream_xchacha20poly1305_state,
    crypto_secretstream_xchacha20poly1305_TAG_FINAL,
    crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from plauder.crypto.errors import DecryptionFailed

CHUNK_SIZE = 64 * 1024
KEY_SIZE: int = crypto_secretstream_xchacha20poly1305_KEYBYTES
HEADER_SIZE: int = crypto_secretstream_xchacha20poly1305_HEADERBYTES
ABYTES: int = crypto_secretstream_xchacha20poly1305_ABYTES
_SEALED_CHUNK = CHUNK_SIZE + ABYTES
_TAG_MESSAGE: int = crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: int = crypto_secretstream_xchacha20poly1305_TAG_FINAL
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class MediaErrorCode(StrEnum):
    """Stable codes of the ways a media blob is refused."""

    BAD_DESCRIPTION = "media_bad_description"
    TAMPERED = "media_tampered"
    TRUNCATED = "media_truncated"
    MISMATCH = "media_mismatch"


class MediaError(DecryptionFailed):
    """A media blob could not be decrypted into the file its description names."""

    code: MediaErrorCode


class MediaBadDescription(MediaError):
    """The key, sizes or digests describing a blob are malformed or disagree."""

    code = MediaErrorCode.BAD_DESCRIPTION


class MediaTampered(MediaError):
    """A chunk failed authentication: the blob was altered or the key is wrong."""

    code = MediaErrorCode.TAMPERED


class MediaTruncated(MediaError):
    """The blob ended before its final chunk."""

    code = MediaErrorCode.TRUNCATED


class MediaMismatch(MediaError):
    """The blob's length or SHA-256, or the file's, differ from the description."""

    code = MediaErrorCode.MISMATCH


def encrypted_size(size: int) -> int:
    """Bytes of the blob that a file of `size` bytes encrypts to."""
    if size < 0:
        raise ValueError("a file size is not negative")
    chunks = max(1, -(-size // CHUNK_SIZE))
    return HEADER_SIZE + size + chunks * ABYTES


@dataclass(frozen=True, slots=True)
class EncryptedMedia:
    """What a receiver needs to fetch and check a blob: the fields of content.Media."""

    key: bytes
    enc_size: int
    sha256: str  # hex, of the blob
    size: int
    plain_sha256: str  # hex, of the file


class MediaEncryptor:
    """Encrypts one file under a fresh key, chunk by chunk, hashing both sides as it goes."""

    def __init__(self) -> None:
        """Draw a fresh key and start the stream."""
        self._key: bytes = crypto_secretstream_xchacha20poly1305_keygen()
        self._state = crypto_secretstream_xchacha20poly1305_state()
        self._header: bytes = crypto_secretstream_xchacha20poly1305_init_push(
            self._state, self._key
        )
        self._pending = bytearray()
        self._plain_hash = hashlib.sha256()
        self._size = 0
        self._blob_hash = hashlib.sha256()
        self._enc_size = 0
        self._result: EncryptedMedia | None = None

    @property
    def key(self) -> bytes:
        """The file's 32-byte secretstream key."""
        return self._key

    @property
    def result(self) -> EncryptedMedia:
        """Key, sizes and digests of the file and its blob, once finish() returned."""
        if self._result is None:
            raise RuntimeError("the stream is not finished")
        return self._result

    def feed(self, data: bytes) -> bytes:
        """Take more of the file; return the blob bytes of the chunks it completed."""
        if self._result is not None:
            raise RuntimeError("the stream is finished")
        self._plain_hash.update(data)
        self._size += len(data)
        self._pending += data
        # a full chunk stays pending until more follows: it may be the final one
        full = (len(self._pending) - 1) // CHUNK_SIZE
        out = [self._take_header()]
        for i in range(full):
            chunk = bytes(self._pending[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
            out.append(self._seal(chunk, _TAG_MESSAGE))
        del self._pending[: full * CHUNK_SIZE]
        return self._emit(b"".join(out))

    def finish(self) -> bytes:
        """Seal the rest as the final chunk and return the blob's last bytes."""
        if self._result is not None:
            raise RuntimeError("the stream is finished")
        out = self._take_header() + self._seal(bytes(self._pending), _TAG_FINAL)
        self._pending.clear()
        out = self._emit(out)
        self._result = EncryptedMedia(
            key=self._key,
            enc_size=self._enc_size,
            sha256=self._blob_hash.hexdigest(),
            size=self._size,
            plain_sha256=self._plain_hash.hexdigest(),
        )
        return out

    def _take_header(self) -> bytes:
        """The header the first time, then nothing."""
        header, self._header = self._header, b""
        return header

    def _seal(self, chunk: bytes, tag: int) -> bytes:
        """One sealed chunk."""
        return crypto_secretstream_xchacha20poly1305_push(self._state, chunk, tag=tag)

    def _emit(self, out: bytes) -> bytes:
        """Count and hash blob bytes on their way out."""
        self._blob_hash.update(out)
        self._enc_size += len(out)
        return out


class MediaDecryptor:
    """Decrypts one blob chunk by chunk and checks it against the description it came with.

    feed() returns only authenticated plaintext; finish() returns the last of it
    after checking the whole: keep the file only once finish() returned.
    """

    def __init__(
        self, key: bytes, *, enc_size: int, sha256: str, size: int, plain_sha256: str
    ) -> None:
        """Check the description (content.Media's fields, the key decoded) and get ready."""
        if len(key) != KEY_SIZE:
            raise MediaBadDescription(f"a media key is {KEY_SIZE} bytes, not {len(key)}")
        for name, digest in (("sha256", sha256), ("plain_sha256", plain_sha256)):
            if not _HEX_SHA256.fullmatch(digest):
                raise MediaBadDescription(f"{name} is not a lowercase hex SHA-256")
        if size < 0 or enc_size != encrypted_size(size):
            raise MediaBadDescription(
                f"a file of {size} bytes does not encrypt to {enc_size} bytes"
            )
        self._key = key
        self._expected = EncryptedMedia(
            key=key, enc_size=enc_size, sha256=sha256, size=size, plain_sha256=plain_sha256
        )
        self._state: crypto_secretstream_xchacha20poly1305_state | None = None
        self._pending = bytearray()
        self._blob_hash = hashlib.sha256()
        self._received = 0
        self._plain_hash = hashlib.sha256()
        self._size = 0
        self._final = False
        self._finished = False

    def feed(self, data: bytes) -> bytes:
        """Take more of the blob; return the plaintext of the chunks it completed."""
        if self._finished:
            raise RuntimeError("the stream is finished")
        self._received += len(data)
        if self._received > self._expected.enc_size:
            raise MediaMismatch(
                f"the blob is longer than the {self._expected.enc_size} bytes described"
            )
        self._blob_hash.update(data)
        self._pending += data
        if self._state is None:
            if len(self._pending) < HEADER_SIZE:
                return b""
            self._state = crypto_secretstream_xchacha20poly1305_state()
            crypto_secretstream_xchacha20poly1305_init_pull(
                self._state, bytes(self._pending[:HEADER_SIZE]), self._key
            )
            del self._pending[:HEADER_SIZE]
        full = len(self._pending) // _SEALED_CHUNK
        out = []
        for i in range(full):
            if self._final:
                raise MediaTampered("the blob goes on after its final chunk")
            sealed = bytes(self._pending[i * _SEALED_CHUNK : (i + 1) * _SEALED_CHUNK])
            out.append(self._open(self._state, sealed))
        del self._pending[: full * _SEALED_CHUNK]
        if self._final and self._pending:
            raise MediaTampered("the blob goes on after its final chunk")
        return b"".join(out)

    def finish(self) -> bytes:
        """Decrypt the last chunk, check the blob and the file; return the last plaintext."""
        if self._finished:
            raise RuntimeError("the stream is finished")
        self._finished = True
        expected = self._expected
        if self._received < expected.enc_size:
            raise MediaTruncated(
                f"the blob ended after {self._received} of {expected.enc_size} bytes"
            )
        out = b""
        if not self._final:
            if self._state is None or not self._pending:
                raise MediaTruncated("the blob ended before its final chunk")
            out = self._open(self._state, bytes(self._pending))
            self._pending.clear()
            if not self._final:
                raise MediaTruncated("the blob ended before its final chunk")
        if self._blob_hash.hexdigest() != expected.sha256:
            raise MediaMismatch("the blob's SHA-256 differs from the description")
        if self._size != expected.size:
            raise MediaMismatch(f"the file has {self._size} bytes, not {expected.size}")
        if self._plain_hash.hexdigest() != expected.plain_sha256:
            raise MediaMismatch("the file's SHA-256 differs from the description")
        return out

    def _open(self, state: crypto_secretstream_xchacha20poly1305_state, sealed: bytes) -> bytes:
        """Authenticate and decrypt one chunk; note whether it was the final one."""
        try:
            plain, tag = crypto_secretstream_xchacha20poly1305_pull(state, sealed)
        except NaclCryptoError as exc:
            raise MediaTampered(
                "a chunk of the blob failed authentication: it was altered, or the key is wrong"
            ) from exc
        if tag == _TAG_FINAL:
            self._final = True
        elif tag != _TAG_MESSAGE:
            raise MediaTampered(f"a chunk of the blob has the unexpected tag {tag}")
        self._plain_hash.update(plain)
        self._size += len(plain)
        return plain


def encrypt(data: bytes) -> tuple[bytes, EncryptedMedia]:
    """Encrypt a whole file held in memory; return its blob and description."""
    encryptor = MediaEncryptor()
    blob = encryptor.feed(data) + encryptor.finish()
    return blob, encryptor.result


def decrypt(blob: bytes, description: EncryptedMedia) -> bytes:
    """Decrypt and check a whole blob held in memory."""
    decryptor = MediaDecryptor(
        description.key,
        enc_size=description.enc_size,
        sha256=description.sha256,
        size=description.size,
        plain_sha256=description.plain_sha256,
    )
    return decryptor.feed(blob) + decryptor.finish()
