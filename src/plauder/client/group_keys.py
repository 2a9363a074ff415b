"""This device's Megolm state: its outbound session per group and the sessions shared with it."""

from plauder.client.group_store import GroupStore, SharedDevice
from plauder.client.keys import Keys
from plauder.crypto import (
    GroupCiphertext,
    GroupKeyShare,
    GroupPlaintext,
    InboundGroupSessions,
    OutboundGroupSession,
)
from plauder.protocol.frames import DeviceKeys


class GroupKeys:
    """Megolm sessions, loaded from the store on first use and written back by `persist()`.

    They share the Olm lock (`Keys.lock`): callers hold it from the first crypto
    call until `persist()` ran inside the transaction that stores the outcome.
    """

    def __init__(self, keys: Keys, store: GroupStore, pickle_key: bytes) -> None:
        self._keys = keys
        self._store = store
        self._pickle_key = pickle_key
        self._inbound = InboundGroupSessions()
        self._loaded: set[tuple[str, str]] = set()
        self._outbound: dict[str, tuple[OutboundGroupSession, set[SharedDevice]]] = {}
        self._dirty_outbound: set[str] = set()

    # --- this device's sessions ----------------------------------------------------------

    def outbound(self, gid: str) -> tuple[OutboundGroupSession | None, set[SharedDevice]]:
        """This device's current session for a group, if any, and whom it was shared with."""
        if gid not in self._outbound:
            stored = self._store.outbound(gid)
            if stored is None:
                return None, set()
            pickle, shared = stored
            self._outbound[gid] = (
                OutboundGroupSession.from_pickle(pickle, self._pickle_key),
                shared,
            )
        session, shared = self._outbound[gid]
        return session, set(shared)

    def start(self, gid: str, now_ms: int) -> OutboundGroupSession:
        """Replace this device's session for a group by a fresh one, shared with nobody yet."""
        session = OutboundGroupSession.create(gid, now_ms)
        self._outbound[gid] = (session, set())
        self._dirty_outbound.add(gid)
        return session

    def _current(self, gid: str) -> OutboundGroupSession:
        session, _ = self.outbound(gid)
        if session is None:
            raise KeyError(f"no group session for {gid} yet: start one first")
        return session

    def shared(self, gid: str, devices: set[SharedDevice]) -> None:
        """Record that the current session's key went to these devices."""
        session, shared = self._current(gid), self._outbound[gid][1]
        self._outbound[gid] = (session, shared | devices)
        self._dirty_outbound.add(gid)

    def key_share(self, gid: str) -> GroupKeyShare:
        """The current session's key at its next index, signed by this device."""
        return self._current(gid).key_share(self._keys.load())

    def encrypt(self, gid: str, plaintext: bytes, now_ms: int) -> GroupCiphertext:
        """Encrypt with the current session (which must not need rotation)."""
        session = self._current(gid)
        self._dirty_outbound.add(gid)
        return session.encrypt(plaintext, now_ms)

    # --- sessions shared with this device ------------------------------------------------

    def _load(self, sender_key: str, session_id: str) -> None:
        ref = (sender_key, session_id)
        if ref in self._loaded:
            return
        pickle = self._store.inbound(sender_key, session_id)
        if pickle is not None and not self._inbound.has_session(sender_key, session_id):
            self._inbound.load_session(pickle, self._pickle_key)
        self._loaded.add(ref)

    def import_share(self, share: GroupKeyShare, olm_sender: str, sender: DeviceKeys) -> None:
        """Import a key that arrived over Olm (raises UntrustedDevice)."""
        self._load(olm_sender, share.session_id)
        self._inbound.import_share(share, olm_sender, sender)

    def has_inbound(self, sender_key: str, session_id: str) -> bool:
        """Whether the sender device's session key was received."""
        self._load(sender_key, session_id)
        return self._inbound.has_session(sender_key, session_id)

    def decrypt(
        self, gid: str, sender_key: str, session_id: str, ciphertext: bytes
    ) -> GroupPlaintext:
        """Decrypt a group message (raises UnknownGroupSession, ReplayedMessage, ...)."""
        self._load(sender_key, session_id)
        return self._inbound.decrypt(gid, sender_key, session_id, ciphertext)

    # --- persistence ---------------------------------------------------------------------

    def persist(self) -> None:
        """Write changed sessions to the store; call inside the transaction of their effects."""
        for gid in self._dirty_outbound:
            session, shared = self._outbound[gid]
            self._store.put_outbound(gid, session.pickle(self._pickle_key), shared)
        self._dirty_outbound.clear()
        for sender_key, session_id in self._inbound.dirty_sessions():
            pickle = self._inbound.pickle_session(sender_key, session_id, self._pickle_key)
            self._store.put_inbound(sender_key, session_id, pickle)
        self._inbound.clear_dirty()

    def forget_inbound(self) -> None:
        """Drop unsaved inbound changes after a failed transaction (reloaded on next use).

        Outbound sessions stay: an older copy would encrypt at indices already used.
        """
        self._inbound = InboundGroupSessions()
        self._loaded.clear()
