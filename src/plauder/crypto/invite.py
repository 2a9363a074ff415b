"""Invite cards: a group's name and description, sealed under a key only its invite link holds.

An admin's device draws a fresh key for each invite link, seals the group's
name, description and their time with it (NaCl's SecretBox: XSalsa20-Poly1305)
and gives the server the sealed card with the link's token. The key travels
only in the link, after a `#`, so the server stores a card it cannot read;
whoever joins with the link opens it at once, before any member's device is
online to tell them the name.
"""

from dataclasses import dataclass

import msgspec
from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.secret import SecretBox
from nacl.utils import random

from plauder.crypto.errors import DecryptionFailed

KEY_SIZE: int = SecretBox.KEY_SIZE
MAX_CARD_BYTES = 4096  # a sealed card; servers refuse larger ones
_MAX_DESCRIPTION = 2000  # characters of the description a card keeps


class InvalidCard(DecryptionFailed):
    """A card that does not open with the link's key, or does not hold a card."""


class _Card(msgspec.Struct, frozen=True):
    name: str
    description: str
    state_ts: int


@dataclass(frozen=True, slots=True)
class InviteCard:
    """What a card tells a joiner: the group's name and description as of `state_ts`."""

    name: str
    description: str
    state_ts: int


def new_link_key() -> bytes:
    """A fresh key for one invite link."""
    return random(KEY_SIZE)


def seal_card(key: bytes, card: InviteCard) -> bytes:
    """The card sealed under the link's key (its description shortened to fit)."""
    plain = msgspec.msgpack.encode(
        _Card(card.name, card.description[:_MAX_DESCRIPTION], card.state_ts)
    )
    sealed = bytes(SecretBox(key).encrypt(plain))
    if len(sealed) > MAX_CARD_BYTES:
        raise ValueError("the group's name is too long for an invite card")
    return sealed


def open_card(key: bytes, sealed: bytes) -> InviteCard:
    """The card a link's key opens; InvalidCard if it does not."""
    if len(key) != KEY_SIZE:
        raise InvalidCard(f"an invite link key has {KEY_SIZE} bytes")
    try:
        card = msgspec.msgpack.decode(SecretBox(key).decrypt(sealed), type=_Card)
    except (NaclCryptoError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidCard("the invite card does not open with this link's key") from exc
    return InviteCard(card.name, card.description, card.state_ts)
