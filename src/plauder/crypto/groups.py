"""Megolm group sessions: one outbound session per group and sender device, inbound ones per sender.

A sender device encrypts a group's messages with its `OutboundGroupSession` and
sends a `GroupKeyShare` over Olm to every member device before its first
message. The share holds the session key at the ratchet's current index, so a
device that gets it later cannot read what was sent before. The sender replaces
the session after `MAX_GROUP_MESSAGES` messages, after `MAX_GROUP_SESSION_AGE_MS`,
and after any member leaves or is removed. Receivers keep each session with the
sender device that shared it and refuse a second decryption of the same
(session id, message index). Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import vodozemac

from plauder.crypto.errors import (
    BadSignature,
    BadStoreKey,
    DecryptionFailed,
    GroupSessionExpired,
    ReplayedMessage,
    UnknownGroupSession,
    UntrustedDevice,
)
from plauder.crypto.identity import Device, verify_signature
from plauder.protocol.frames import DeviceKeys

MAX_GROUP_MESSAGES = 100
MAX_GROUP_SESSION_AGE_MS = 7 * 24 * 60 * 60 * 1000
_PICKLE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class GroupKeyShare:
    """A Megolm session key as sent over Olm to one member device, signed by the sender device."""

    group_id: str
    session_id: str
    session_key: str
    message_index: int
    sender_identity_key: str
    sender_signing_key: str
    signature: str = ""

    def payload(self) -> bytes:
        """Return the bytes the sender device signs to vouch for this share."""
        parts = (
            self.group_id,
            self.session_id,
            self.session_key,
            str(self.message_index),
            self.sender_identity_key,
            self.sender_signing_key,
        )
        return b"plauder-group-key-v1\x00" + b"\x00".join(p.encode() for p in parts)


@dataclass(frozen=True, kw_only=True)
class GroupCiphertext:
    """One encrypted group message and the (session id, message index) it was sent under."""

    session_id: str
    message_index: int
    ciphertext: bytes


@dataclass(frozen=True, kw_only=True)
class GroupPlaintext:
    """A decrypted group message and the sender device whose session encrypted it."""

    plaintext: bytes
    session_id: str
    message_index: int
    sender_identity_key: str
    sender_signing_key: str


class OutboundGroupSession:
    """This device's Megolm session for one group: encrypt, share its key, know when to rotate."""

    def __init__(self, group_id: str, session: vodozemac.GroupSession, created_ms: int) -> None:
        """Wrap a vodozemac group session created at `created_ms`."""
        self._group_id = group_id
        self._session = session
        self._created_ms = created_ms

    @classmethod
    def create(cls, group_id: str, now_ms: int) -> OutboundGroupSession:
        """Start a fresh session for the group at time `now_ms`."""
        return cls(group_id, vodozemac.GroupSession(), now_ms)

    @property
    def group_id(self) -> str:
        """The group this session encrypts for."""
        return self._group_id

    @property
    def session_id(self) -> str:
        """The session's id (its Ed25519 public key, unpadded base64)."""
        return self._session.session_id

    @property
    def message_index(self) -> int:
        """The index the next message will be encrypted at (the number sent so far)."""
        return self._session.message_index

    @property
    def created_ms(self) -> int:
        """When the session was created, in milliseconds."""
        return self._created_ms

    def needs_rotation(self, now_ms: int, *, member_removed: bool = False) -> bool:
        """Tell whether to replace the session: 100 messages, a week old, or a member removed."""
        return (
            member_removed
            or self.message_index >= MAX_GROUP_MESSAGES
            or now_ms - self._created_ms >= MAX_GROUP_SESSION_AGE_MS
        )

    def encrypt(self, plaintext: bytes, now_ms: int) -> GroupCiphertext:
        """Encrypt a group message; raise GroupSessionExpired if the session must be replaced."""
        if self.needs_rotation(now_ms):
            raise GroupSessionExpired("the group session reached its message or age limit")
        index = self.message_index
        message = self._session.encrypt(plaintext)
        return GroupCiphertext(
            session_id=self.session_id, message_index=index, ciphertext=message.to_bytes()
        )

    def key_share(self, device: Device) -> GroupKeyShare:
        """Return the session key at the current index, signed by this device, to send over Olm."""
        unsigned = GroupKeyShare(
            group_id=self._group_id,
            session_id=self.session_id,
            session_key=self._session.session_key.to_base64(),
            message_index=self.message_index,
            sender_identity_key=device.identity_key,
            sender_signing_key=device.signing_key,
        )
        return dataclasses.replace(unsigned, signature=device.sign(unsigned.payload()))

    def pickle(self, key: bytes) -> str:
        """Serialise the session, encrypted with a 32-byte key; use only the restored copy after."""
        try:
            session = self._session.pickle(key)
        except ValueError as exc:
            raise BadStoreKey("cannot pickle the group session") from exc
        return _dump(group_id=self._group_id, created_ms=self._created_ms, session=session)

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> OutboundGroupSession:
        """Restore a session from its pickle; raise BadStoreKey if the key or pickle is wrong."""
        fields = _load(pickle)
        try:
            session = vodozemac.GroupSession.from_pickle(fields["session"], key)
            return cls(str(fields["group_id"]), session, int(fields["created_ms"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadStoreKey("cannot unpickle the group session") from exc


@dataclass
class _Inbound:
    """One received Megolm session, the sender device that shared it, and the indices seen."""

    session: vodozemac.InboundGroupSession
    group_id: str
    sender_identity_key: str
    sender_signing_key: str
    seen: set[int] = field(default_factory=set)


class InboundGroupSessions:
    """The Megolm sessions other devices shared with this one, by (sender identity key, session id).

    Keyed by sender too, so a member who re-shares another's session as its own
    cannot block or stand in for the real sender's key.
    """

    def __init__(self) -> None:
        """Start with no sessions."""
        self._sessions: dict[tuple[str, str], _Inbound] = {}
        self._dirty: set[tuple[str, str]] = set()

    def has_session(self, sender_identity_key: str, session_id: str) -> bool:
        """Tell whether a key for the sender device's session was imported."""
        return (sender_identity_key, session_id) in self._sessions

    def first_known_index(self, sender_identity_key: str, session_id: str) -> int:
        """Return the first message index this device can decrypt in the session."""
        return self._get(sender_identity_key, session_id).session.first_known_index

    def import_share(self, share: GroupKeyShare, olm_sender: str, sender: DeviceKeys) -> None:
        """Import a key share that arrived over Olm from `olm_sender` (an identity key).

        `sender` is the sender's device as vouched for by its account key; the share
        must name that device, come over its Olm channel and carry its signature.
        """
        if not share.sender_identity_key == olm_sender == sender.identity_key:
            raise UntrustedDevice("the group key was not shared by the device it names")
        if share.sender_signing_key != sender.signing_key:
            raise UntrustedDevice("the group key names another signing key than the device's")
        try:
            verify_signature(sender.signing_key, share.payload(), share.signature)
        except BadSignature as exc:
            raise UntrustedDevice("the group key is not signed by the sender device") from exc
        try:
            session = vodozemac.InboundGroupSession(vodozemac.SessionKey(share.session_key))
        except ValueError as exc:
            raise UntrustedDevice("the group session key is malformed") from exc
        if session.session_id != share.session_id:
            raise UntrustedDevice("the group session key does not match its session id")
        if session.first_known_index != share.message_index:
            raise UntrustedDevice("the group session key does not start at its stated index")
        ref = (olm_sender, share.session_id)
        known = self._sessions.get(ref)
        if known is None:
            self._sessions[ref] = _Inbound(
                session, share.group_id, share.sender_identity_key, share.sender_signing_key
            )
        elif known.group_id != share.group_id:
            raise UntrustedDevice("the group session is already known for another group")
        elif session.first_known_index < known.session.first_known_index:
            known.session = session  # an earlier start; the indices seen stay refused
        else:
            return
        self._dirty.add(ref)

    def decrypt(
        self, group_id: str, sender_identity_key: str, session_id: str, ciphertext: bytes
    ) -> GroupPlaintext:
        """Decrypt a group message from a sender device; refuse a replayed message index."""
        inbound = self._get(sender_identity_key, session_id)
        if inbound.group_id != group_id:
            raise DecryptionFailed("the group session belongs to another group")
        try:
            decrypted = inbound.session.decrypt(vodozemac.MegolmMessage.from_bytes(ciphertext))
        except ValueError as exc:
            raise DecryptionFailed("the group message does not decrypt") from exc
        if decrypted.message_index in inbound.seen:
            raise ReplayedMessage(f"group message {decrypted.message_index} was already received")
        inbound.seen.add(decrypted.message_index)
        self._dirty.add((sender_identity_key, session_id))
        return GroupPlaintext(
            plaintext=decrypted.plaintext,
            session_id=session_id,
            message_index=decrypted.message_index,
            sender_identity_key=inbound.sender_identity_key,
            sender_signing_key=inbound.sender_signing_key,
        )

    def dirty_sessions(self) -> set[tuple[str, str]]:
        """Return the (sender, session id) pairs imported or used since the last clear_dirty()."""
        return set(self._dirty)

    def clear_dirty(self) -> None:
        """Forget which sessions changed (they were persisted)."""
        self._dirty.clear()

    def pickle_session(self, sender_identity_key: str, session_id: str, key: bytes) -> str:
        """Serialise one session with its sender and seen indices, encrypted with a 32-byte key."""
        inbound = self._get(sender_identity_key, session_id)
        try:
            session = inbound.session.pickle(key)
        except ValueError as exc:
            raise BadStoreKey("cannot pickle the group session") from exc
        return _dump(
            group_id=inbound.group_id,
            sender_identity_key=inbound.sender_identity_key,
            sender_signing_key=inbound.sender_signing_key,
            seen=sorted(inbound.seen),
            session=session,
        )

    def load_session(self, pickle: str, key: bytes) -> tuple[str, str]:
        """Restore a session from its pickle, replacing any in memory; return (sender, id)."""
        fields = _load(pickle)
        try:
            session = vodozemac.InboundGroupSession.from_pickle(fields["session"], key)
            inbound = _Inbound(
                session,
                str(fields["group_id"]),
                str(fields["sender_identity_key"]),
                str(fields["sender_signing_key"]),
                {int(i) for i in fields["seen"]},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadStoreKey("cannot unpickle the group session") from exc
        ref = (inbound.sender_identity_key, session.session_id)
        self._sessions[ref] = inbound
        self._dirty.discard(ref)
        return ref

    def _get(self, sender_identity_key: str, session_id: str) -> _Inbound:
        """Return a known session or raise UnknownGroupSession."""
        inbound = self._sessions.get((sender_identity_key, session_id))
        if inbound is None:
            raise UnknownGroupSession("no key for this group session was received")
        return inbound


def _dump(**fields: Any) -> str:
    """Encode a pickle's fields, the vodozemac pickle among them, as JSON text."""
    return json.dumps({"v": _PICKLE_VERSION, **fields})


def _load(pickle: str) -> dict[str, Any]:
    """Decode what _dump made; raise BadStoreKey if it is not that."""
    try:
        fields = json.loads(pickle)
    except ValueError as exc:
        raise BadStoreKey("the group session pickle is malformed") from exc
    if not isinstance(fields, dict) or fields.get("v") != _PICKLE_VERSION:
        raise BadStoreKey("the group session pickle has an unknown version")
    return fields
