"""Media tokens: bound to one purpose, one blob, one holder and an end; forged ones fail."""

import pytest

from plauder.server.media_tokens import MediaTokens, Purpose

MEDIA = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
NOW = 1_700_000_000_000


@pytest.fixture
def tokens() -> MediaTokens:
    """Tokens under a fixed secret."""
    return MediaTokens(b"s" * 32)


def test_a_token_names_its_holder_until_it_ends(tokens: MediaTokens) -> None:
    token = tokens.issue(Purpose.PUT, MEDIA, 42, NOW + 1000)
    assert tokens.check(token, Purpose.PUT, MEDIA, NOW) == 42
    assert tokens.check(token, Purpose.PUT, MEDIA, NOW + 999) == 42
    assert tokens.check(token, Purpose.PUT, MEDIA, NOW + 1000) is None


def test_a_token_is_for_one_purpose_and_one_blob(tokens: MediaTokens) -> None:
    token = tokens.issue(Purpose.PUT, MEDIA, 42, NOW + 1000)
    assert tokens.check(token, Purpose.GET, MEDIA, NOW) is None
    assert tokens.check(token, Purpose.PUT, OTHER, NOW) is None


def test_another_secret_or_an_edited_token_fails(tokens: MediaTokens) -> None:
    token = tokens.issue(Purpose.GET, MEDIA, 7, NOW + 1000)
    assert MediaTokens(b"t" * 32).check(token, Purpose.GET, MEDIA, NOW) is None
    expires, holder, mac = token.split(".")
    for edited in (
        f"{int(expires) + 1}.{holder}.{mac}",
        f"{expires}.8.{mac}",
        f"{expires}.{holder}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        f"{expires}.{holder}",
        token + "=",
        " " + token,
        "",
        "é" * 80,
        "1" * 20 + "." + holder + "." + mac,
    ):
        assert tokens.check(edited, Purpose.GET, MEDIA, NOW) is None, edited


def test_tokens_are_url_safe_text(tokens: MediaTokens) -> None:
    token = tokens.issue(Purpose.GET, MEDIA, 2**62, 2**62)
    assert token.isascii() and " " not in token and "/" not in token and "+" not in token
    assert tokens.check(token, Purpose.GET, MEDIA, NOW) == 2**62
