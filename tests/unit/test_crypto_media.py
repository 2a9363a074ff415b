"""Tests of plauder.crypto.media: secretstream blobs for media files."""

import dataclasses
import hashlib
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plauder.crypto.errors import CryptoError, DecryptionFailed
from plauder.crypto.media import (
    ABYTES,
    CHUNK_SIZE,
    HEADER_SIZE,
    KEY_SIZE,
    EncryptedMedia,
    MediaBadDescription,
    MediaDecryptor,
    MediaEncryptor,
    MediaError,
    MediaErrorCode,
    MediaMismatch,
    MediaTampered,
    MediaTruncated,
    decrypt,
    encrypt,
    encrypted_size,
)

SEALED = CHUNK_SIZE + ABYTES
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 12345]


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """data split at the given offsets (sorted, clipped)."""
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def decryptor(description: EncryptedMedia) -> MediaDecryptor:
    """A decryptor for a description."""
    return MediaDecryptor(
        description.key,
        enc_size=description.enc_size,
        sha256=description.sha256,
        size=description.size,
        plain_sha256=description.plain_sha256,
    )


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    data = os.urandom(size)
    blob, description = encrypt(data)
    assert len(blob) == encrypted_size(size) == description.enc_size
    assert description.size == size
    assert description.plain_sha256 == hashlib.sha256(data).hexdigest()
    assert description.sha256 == hashlib.sha256(blob).hexdigest()
    assert len(description.key) == KEY_SIZE
    assert decrypt(blob, description) == data


def test_encrypted_size() -> None:
    assert encrypted_size(0) == HEADER_SIZE + ABYTES  # one empty final chunk
    assert encrypted_size(1) == HEADER_SIZE + 1 + ABYTES
    assert encrypted_size(CHUNK_SIZE) == HEADER_SIZE + CHUNK_SIZE + ABYTES
    assert encrypted_size(CHUNK_SIZE + 1) == HEADER_SIZE + CHUNK_SIZE + 1 + 2 * ABYTES
    with pytest.raises(ValueError):
        encrypted_size(-1)


def test_every_file_gets_a_fresh_key_and_header() -> None:
    first, one = encrypt(b"same")
    second, other = encrypt(b"same")
    assert one.key != other.key
    assert first[:HEADER_SIZE] != second[:HEADER_SIZE]
    assert one.plain_sha256 == other.plain_sha256
    assert one.sha256 != other.sha256


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(0, 3 * CHUNK_SIZE + 100),
    cuts=st.lists(st.integers(0, 3 * CHUNK_SIZE + 100), max_size=8),
    blob_cuts=st.lists(st.integers(0, 3 * SEALED + 200), max_size=8),
)
def test_streaming_in_odd_pieces(size: int, cuts: list[int], blob_cuts: list[int]) -> None:
    data = os.urandom(size)
    encryptor = MediaEncryptor()
    blob = b"".join(encryptor.feed(piece) for piece in pieces(data, cuts)) + encryptor.finish()
    description = encryptor.result
    assert description.key == encryptor.key
    assert len(blob) == encrypted_size(size) == description.enc_size
    dec = decryptor(description)
    plain = b"".join(dec.feed(piece) for piece in pieces(blob, blob_cuts)) + dec.finish()
    assert plain == data


def test_streaming_memory_stays_within_a_chunk() -> None:
    """Each feed hands out every complete chunk but the last one, which may be final."""
    encryptor = MediaEncryptor()
    assert len(encryptor.feed(bytes(CHUNK_SIZE))) == HEADER_SIZE  # may be the final chunk
    assert len(encryptor.feed(b"x")) == SEALED
    assert len(encryptor.finish()) == 1 + ABYTES


def test_the_decryptor_hands_out_full_chunks_as_they_arrive() -> None:
    data = os.urandom(2 * CHUNK_SIZE + 5)
    blob, description = encrypt(data)
    dec = decryptor(description)
    assert dec.feed(blob[: HEADER_SIZE + SEALED]) == data[:CHUNK_SIZE]
    assert dec.feed(blob[HEADER_SIZE + SEALED : -3]) == data[CHUNK_SIZE : 2 * CHUNK_SIZE]
    assert dec.feed(blob[-3:]) == b""
    assert dec.finish() == data[2 * CHUNK_SIZE :]


def test_result_only_after_finish_and_no_use_after_it() -> None:
    encryptor = MediaEncryptor()
    with pytest.raises(RuntimeError):
        _ = encryptor.result
    encryptor.finish()
    with pytest.raises(RuntimeError):
        encryptor.feed(b"more")
    with pytest.raises(RuntimeError):
        encryptor.finish()


def test_errors_are_crypto_errors_with_stable_codes() -> None:
    assert issubclass(MediaError, DecryptionFailed)
    assert issubclass(MediaError, CryptoError)
    assert MediaTampered.code == "media_tampered"
    assert MediaTruncated.code == "media_truncated"
    assert MediaMismatch.code == "media_mismatch"
    assert MediaBadDescription.code == "media_bad_description"
    assert {e.value for e in MediaErrorCode} == {
        "media_tampered",
        "media_truncated",
        "media_mismatch",
        "media_bad_description",
    }


DATA = os.urandom(2 * CHUNK_SIZE + 1000)
BLOB, DESCRIPTION = encrypt(DATA)


def refused(blob: bytes, description: EncryptedMedia = DESCRIPTION) -> MediaError:
    """The error decrypting a blob raises, fed in 1000-byte pieces."""
    dec = decryptor(description)
    with pytest.raises(MediaError) as caught:
        for start in range(0, len(blob), 1000):
            dec.feed(blob[start : start + 1000])
        dec.finish()
    return caught.value


@pytest.mark.parametrize(
    "offset",
    [
        0,  # header
        HEADER_SIZE - 1,
        HEADER_SIZE,  # first chunk's ciphertext
        HEADER_SIZE + CHUNK_SIZE + 3,  # first chunk's tag
        HEADER_SIZE + SEALED + 100,  # second chunk
        len(BLOB) - 1,  # final chunk's tag
    ],
)
def test_a_flipped_byte_anywhere_is_tampering(offset: int) -> None:
    blob = bytearray(BLOB)
    blob[offset] ^= 0x01
    assert isinstance(refused(bytes(blob)), MediaTampered)


@settings(max_examples=30, deadline=None)
@given(offset=st.integers(0, len(BLOB) - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(offset: int, bit: int) -> None:
    blob = bytearray(BLOB)
    blob[offset] ^= 1 << bit
    assert isinstance(refused(bytes(blob)), MediaTampered)


@pytest.mark.parametrize(
    "length",
    [
        0,
        HEADER_SIZE - 1,
        HEADER_SIZE,  # after the header
        HEADER_SIZE + SEALED,  # at a chunk boundary
        HEADER_SIZE + 2 * SEALED,  # before the final chunk
        HEADER_SIZE + SEALED + 500,  # mid-chunk
        len(BLOB) - 1,  # mid final chunk
    ],
)
def test_truncation_is_refused(length: int) -> None:
    error = refused(BLOB[:length])
    assert isinstance(error, MediaTruncated)
    assert error.code == MediaErrorCode.TRUNCATED


def test_a_stream_without_its_final_chunk_is_truncated_even_when_the_length_fits() -> None:
    """A chunk-aligned file whose final chunk is dropped, described by a sender as shorter."""
    data = os.urandom(2 * CHUNK_SIZE)
    blob, full = encrypt(data)
    cut = blob[: HEADER_SIZE + SEALED]
    description = dataclasses.replace(
        full,
        enc_size=len(cut),
        size=CHUNK_SIZE,
        sha256=hashlib.sha256(cut).hexdigest(),
        plain_sha256=hashlib.sha256(data[:CHUNK_SIZE]).hexdigest(),
    )
    assert isinstance(refused(cut, description), MediaTruncated)


def test_a_wrong_key_is_refused() -> None:
    wrong = dataclasses.replace(DESCRIPTION, key=bytes(KEY_SIZE))
    assert isinstance(refused(BLOB, wrong), MediaTampered)
    small_blob, small = encrypt(b"hello")
    assert isinstance(refused(small_blob, dataclasses.replace(small, key=bytes(32))), MediaTampered)


def test_a_different_blob_is_refused() -> None:
    other_blob, other = encrypt(os.urandom(len(DATA)))
    assert len(other_blob) == len(BLOB)
    assert isinstance(refused(other_blob), MediaTampered)  # another file's key
    # the right blob, but a description naming another blob's digest
    assert isinstance(
        refused(BLOB, dataclasses.replace(DESCRIPTION, sha256=other.sha256)), MediaMismatch
    )
    assert isinstance(
        refused(BLOB, dataclasses.replace(DESCRIPTION, plain_sha256=other.plain_sha256)),
        MediaMismatch,
    )


def test_an_appended_chunk_is_refused() -> None:
    encryptor = MediaEncryptor()
    extra = encryptor.feed(bytes(100)) + encryptor.finish()
    assert isinstance(refused(BLOB + extra[HEADER_SIZE:]), MediaMismatch)
    assert isinstance(refused(BLOB + b"\x00"), MediaMismatch)


def test_chunks_out_of_order_are_tampering() -> None:
    head, first, second = (
        BLOB[:HEADER_SIZE],
        BLOB[HEADER_SIZE : HEADER_SIZE + SEALED],
        BLOB[HEADER_SIZE + SEALED : HEADER_SIZE + 2 * SEALED],
    )
    swapped = head + second + first + BLOB[HEADER_SIZE + 2 * SEALED :]
    assert isinstance(refused(swapped), MediaTampered)


def test_data_after_a_full_final_chunk_is_tampering() -> None:
    """A chunk-aligned file ends with a full final chunk; nothing may follow it."""
    blob, description = encrypt(os.urandom(CHUNK_SIZE))
    # a description that leaves room for more, so the length check does not fire first
    roomy = dataclasses.replace(description, enc_size=encrypted_size(2 * CHUNK_SIZE))
    dec = MediaDecryptor(
        roomy.key,
        enc_size=roomy.enc_size,
        sha256=roomy.sha256,
        size=2 * CHUNK_SIZE,
        plain_sha256=roomy.plain_sha256,
    )
    dec.feed(blob)
    with pytest.raises(MediaTampered):
        dec.feed(bytes(SEALED))


def test_a_blob_longer_than_described_is_a_mismatch() -> None:
    blob, description = encrypt(b"x" * 10)
    shorter = dataclasses.replace(description, size=9, enc_size=encrypted_size(9))
    assert isinstance(refused(blob, shorter), MediaMismatch)


@pytest.mark.parametrize(
    "change",
    [
        {"key": bytes(31)},
        {"sha256": "ab"},
        {"plain_sha256": "Z" * 64},
        {"sha256": "A" * 64},
        {"size": -1},
        {"enc_size": encrypted_size(2 * CHUNK_SIZE + 1000) + 1},
    ],
)
def test_a_malformed_description_is_refused_up_front(change: dict[str, object]) -> None:
    with pytest.raises(MediaBadDescription):
        decryptor(dataclasses.replace(DESCRIPTION, **change))  # type: ignore[arg-type]
