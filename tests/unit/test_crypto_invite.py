"""Invite cards and the links that carry their keys."""

import pytest

from plauder.crypto.invite import (
    MAX_CARD_BYTES,
    InvalidCard,
    InviteCard,
    new_link_key,
    open_card,
    seal_card,
)
from plauder.protocol.groups import key_of, link, token_of


def test_a_card_opens_only_with_its_links_key() -> None:
    key = new_link_key()
    card = InviteCard("Bergwacht", "Einsätze", 1_795_000_000_000)
    sealed = seal_card(key, card)
    assert b"Bergwacht" not in sealed
    assert open_card(key, sealed) == card
    with pytest.raises(InvalidCard):
        open_card(new_link_key(), sealed)
    with pytest.raises(InvalidCard):
        open_card(key, sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(InvalidCard):
        open_card(key[:16], sealed)


def test_a_long_description_is_shortened_to_fit() -> None:
    key = new_link_key()
    sealed = seal_card(key, InviteCard("Chor", "x" * 10_000, 1))
    assert len(sealed) <= MAX_CARD_BYTES
    assert open_card(key, sealed).description == "x" * 2000


def test_the_server_gets_the_token_and_never_the_key() -> None:
    key = new_link_key()
    shared = link("AbC-_12", key)
    assert shared.startswith("plauder://join/AbC-_12#")
    assert token_of(shared) == "AbC-_12" and key_of(shared) == key
    assert token_of(" AbC-_12 ") == "AbC-_12" and key_of("AbC-_12") == b""
    assert key_of("plauder://join/t#%%") == b""  # a garbled key: joined without the name
