"""The Olm sessions of one local device with the devices of its peers."""

from __future__ import annotations

import vodozemac

from plauder.crypto.errors import BadStoreKey, CryptoError, DecryptionFailed, UntrustedDevice
from plauder.crypto.identity import Device, verify_prekey
from plauder.protocol.frames import DeviceKeys, SignedKey

MAX_SESSIONS_PER_PEER = 5
_PRE_KEY = 0
_NORMAL = 1


class OlmSessions:
    """All Olm sessions of a local device, by peer identity key, most recently used first."""

    def __init__(self, device: Device) -> None:
        """Start with no sessions for the given local device."""
        self._device = device
        self._sessions: dict[str, list[vodozemac.Session]] = {}
        self._dirty: set[str] = set()
        self._device_dirty = False

    def has_session(self, peer_identity_key: str) -> bool:
        """Tell whether there is at least one session with the peer device."""
        return bool(self._sessions.get(peer_identity_key))

    def start_session(self, peer: DeviceKeys, prekey: SignedKey) -> None:
        """Create an outbound session to a peer device from one of its signed pre-keys."""
        verify_prekey(peer, prekey)
        try:
            identity_key = vodozemac.Curve25519PublicKey.from_base64(peer.identity_key)
            one_time_key = vodozemac.Curve25519PublicKey.from_base64(prekey.key)
            session = self._device.olm.create_outbound_session(identity_key, one_time_key)
        except ValueError as exc:
            raise UntrustedDevice("the peer's keys are malformed") from exc
        self._add(peer.identity_key, session)

    def encrypt(self, peer_identity_key: str, plaintext: bytes) -> tuple[int, bytes]:
        """Encrypt for the peer device; return the Olm message type and ciphertext."""
        sessions = self._sessions.get(peer_identity_key)
        if not sessions:
            raise CryptoError("no Olm session with this device")
        try:
            message_type, body = sessions[0].encrypt(plaintext).to_parts()
        except ValueError as exc:
            raise CryptoError("Olm encryption failed") from exc
        self._dirty.add(peer_identity_key)
        return message_type, body

    def decrypt(self, peer_identity_key: str, message_type: int, body: bytes) -> bytes:
        """Decrypt a message from the peer device; raise DecryptionFailed on any failure."""
        if message_type not in (_PRE_KEY, _NORMAL):
            raise DecryptionFailed(f"unknown Olm message type {message_type}")
        try:
            message = vodozemac.AnyOlmMessage.from_parts(message_type, body)
        except ValueError as exc:
            raise DecryptionFailed("malformed Olm message") from exc
        if message_type == _PRE_KEY:
            return self._decrypt_pre_key(peer_identity_key, message)
        for session in self._sessions.get(peer_identity_key, []):
            try:
                plaintext = session.decrypt(message)
            except ValueError:
                continue
            self._touch(peer_identity_key, session)
            return plaintext
        raise DecryptionFailed("no Olm session with this device can decrypt the message")

    def _decrypt_pre_key(self, peer_identity_key: str, message: vodozemac.AnyOlmMessage) -> bytes:
        """Decrypt a pre-key message with its session, creating it if it is new."""
        pre_key = message.to_pre_key()
        if pre_key is None:
            raise DecryptionFailed("not a pre-key message")
        for session in self._sessions.get(peer_identity_key, []):
            if session.session_matches(pre_key):
                try:
                    plaintext = session.decrypt(message)
                except ValueError as exc:
                    raise DecryptionFailed("Olm pre-key message does not decrypt") from exc
                self._touch(peer_identity_key, session)
                return plaintext
        try:
            sender_key = vodozemac.Curve25519PublicKey.from_base64(peer_identity_key)
            session, plaintext = self._device.olm.create_inbound_session(sender_key, pre_key)
        except ValueError as exc:
            raise DecryptionFailed("cannot create an Olm session from the message") from exc
        self._device_dirty = True
        self._add(peer_identity_key, session)
        return plaintext

    def dirty_peers(self) -> set[str]:
        """Return the peers whose sessions changed since the last clear_dirty()."""
        return set(self._dirty)

    def device_dirty(self) -> bool:
        """Tell whether the local device's account changed (a one-time key was used)."""
        return self._device_dirty

    def clear_dirty(self) -> None:
        """Forget which sessions and whether the device changed (they were persisted)."""
        self._dirty.clear()
        self._device_dirty = False

    def pickle_peer(self, peer_identity_key: str, key: bytes) -> list[str]:
        """Serialise the peer's sessions, most recently used first, with a 32-byte key."""
        try:
            return [s.pickle(key) for s in self._sessions.get(peer_identity_key, [])]
        except ValueError as exc:
            raise BadStoreKey("cannot pickle the Olm sessions") from exc

    def load_peer(self, peer_identity_key: str, pickles: list[str], key: bytes) -> None:
        """Replace the peer's sessions with ones restored from pickles."""
        try:
            sessions = [vodozemac.Session.from_pickle(p, key) for p in pickles]
        except ValueError as exc:
            raise BadStoreKey("cannot unpickle the Olm sessions") from exc
        if sessions:
            self._sessions[peer_identity_key] = sessions[:MAX_SESSIONS_PER_PEER]
        else:
            self._sessions.pop(peer_identity_key, None)
        self._dirty.discard(peer_identity_key)

    def _add(self, peer_identity_key: str, session: vodozemac.Session) -> None:
        """Put a new session first, dropping the least recently used beyond the cap."""
        sessions = self._sessions.setdefault(peer_identity_key, [])
        sessions.insert(0, session)
        del sessions[MAX_SESSIONS_PER_PEER:]
        self._dirty.add(peer_identity_key)

    def _touch(self, peer_identity_key: str, session: vodozemac.Session) -> None:
        """Move a session that just decrypted to the front."""
        sessions = self._sessions[peer_identity_key]
        sessions.remove(session)
        sessions.insert(0, session)
        self._dirty.add(peer_identity_key)
