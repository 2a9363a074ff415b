"""Tests of plauder.crypto.safety."""

from plauder.crypto import (
    AccountKey,
    b64encode,
    format_safety_number,
    safety_number,
    safety_qr_payload,
)

# libsignal's NumericFingerprintGeneratorTest vector (keys with their 0x05 type byte).
SIGNAL_ALICE = b64encode(
    bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
)
SIGNAL_BOB = b64encode(
    bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
)
SIGNAL_NUMBER = "300354477692869396892869876765458257569162576843440918079131"


def test_matches_signal_test_vector() -> None:
    assert safety_number("+14152222222", SIGNAL_ALICE, "+14153333333", SIGNAL_BOB) == (
        SIGNAL_NUMBER
    )
    assert safety_number("+14153333333", SIGNAL_BOB, "+14152222222", SIGNAL_ALICE) == (
        SIGNAL_NUMBER
    )


def test_symmetric_and_sixty_digits() -> None:
    alice, bob = AccountKey.generate().public_key, AccountKey.generate().public_key
    number = safety_number("+4915550001", alice, "+4915550002", bob)
    assert len(number) == 60
    assert number.isdigit()
    assert safety_number("+4915550002", bob, "+4915550001", alice) == number


def test_changes_with_either_key_or_number() -> None:
    alice, bob, eve = (AccountKey.generate().public_key for _ in range(3))
    number = safety_number("+1", alice, "+2", bob)
    assert safety_number("+1", eve, "+2", bob) != number
    assert safety_number("+1", alice, "+2", eve) != number
    assert safety_number("+3", alice, "+2", bob) != number


def test_format() -> None:
    formatted = format_safety_number(SIGNAL_NUMBER)
    groups = formatted.split(" ")
    assert len(groups) == 12
    assert all(len(g) == 5 and g.isdigit() for g in groups)
    assert formatted.replace(" ", "") == SIGNAL_NUMBER


def test_qr_payload_is_the_same_on_both_sides() -> None:
    alice, bob = AccountKey.generate().public_key, AccountKey.generate().public_key
    payload = safety_qr_payload("+1", alice, "+2", bob)
    assert payload == safety_qr_payload("+2", bob, "+1", alice)
    assert payload == "plauder-safety-v1:" + safety_number("+1", alice, "+2", bob)
