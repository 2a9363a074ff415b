"""This device's Olm keys and sessions: load, encrypt, decrypt, persist, top up one-time keys."""

import asyncio

from plauder.client.connection import Connection, next_request_id
from plauder.client.errors import ClientError, NotRegistered
from plauder.client.store import LocalStore
from plauder.crypto import Device, OlmSessions
from plauder.protocol.frames import DeviceBundle, DeviceKeys, OutEnvelope, UploadKeys

ONE_TIME_KEYS = 40  # below vodozemac's 50 private one-time keys, with room for claimed ones


class Keys:
    """The device's vodozemac account and its Olm sessions, loaded lazily from the store.

    Encrypting and decrypting change session state that must reach the store in
    the same transaction as whatever the message changed: callers hold `lock`
    from the first crypto call until `persist()` ran inside their transaction.
    """

    def __init__(self, store: LocalStore) -> None:
        self._store = store
        self._device: Device | None = None
        self._sessions: OlmSessions | None = None
        self._loaded_peers: set[str] = set()
        self.lock = asyncio.Lock()

    def load(self) -> Device:
        """This device's keys, from the store on first use."""
        if self._device is None:
            pickle = self._store.get_secret("device")
            if pickle is None:
                raise NotRegistered("this profile is not registered: register and verify first")
            self._device = Device.from_pickle(pickle.decode(), self._store.cipher.pickle_key)
            self._sessions = OlmSessions(self._device)
        return self._device

    def adopt(self, device: Device) -> None:
        """Use a newly registered device from now on, and store it."""
        self._device = device
        self._sessions = OlmSessions(device)
        self._loaded_peers.clear()
        self._save_device()

    def _olm(self) -> OlmSessions:
        self.load()
        assert self._sessions is not None
        return self._sessions

    def _save_device(self) -> None:
        device = self.load()
        self._store.put_secret("device", device.pickle(self._store.cipher.pickle_key).encode())

    def _peer(self, identity_key: str) -> OlmSessions:
        """The sessions, with those of this peer device loaded from the store."""
        olm = self._olm()
        if identity_key not in self._loaded_peers:
            pickles = self._store.sessions(identity_key)
            if pickles:
                olm.load_peer(identity_key, pickles, self._store.cipher.pickle_key)
            self._loaded_peers.add(identity_key)
        return olm

    # --- sessions ------------------------------------------------------------------------

    def without_session(self, devices: list[DeviceKeys]) -> list[DeviceKeys]:
        """The devices we have no Olm session with yet."""
        return [d for d in devices if not self._peer(d.identity_key).has_session(d.identity_key)]

    def start_sessions(self, bundles: list[DeviceBundle], wanted: set[str]) -> None:
        """Start sessions with the wanted devices (by identity key) from their claimed pre-keys."""
        for bundle in bundles:
            key = bundle.device.identity_key
            if key in wanted and bundle.prekey is not None:
                self._peer(key).start_session(bundle.device, bundle.prekey)

    def encrypt(
        self, number: str, devices: list[DeviceKeys], plaintext: bytes
    ) -> list[OutEnvelope]:
        """One ciphertext per device of the number; each must have a session."""
        olm = self._olm()
        out = []
        for d in devices:
            if not olm.has_session(d.identity_key):
                raise ClientError(f"device {d.device_id} of {number} has no keys left to start")
            msg_type, body = olm.encrypt(d.identity_key, plaintext)
            out.append(OutEnvelope(to=number, device_id=d.device_id, type=msg_type, body=body))
        return out

    def decrypt(self, identity_key: str, message_type: int, body: bytes) -> bytes:
        """The plaintext of a message from a peer device (raises the crypto errors)."""
        return self._peer(identity_key).decrypt(identity_key, message_type, body)

    def persist(self) -> None:
        """Write changed sessions (and the device) to the store; call inside a transaction."""
        olm = self._olm()
        for peer in olm.dirty_peers():
            self._store.set_sessions(peer, olm.pickle_peer(peer, self._store.cipher.pickle_key))
        if olm.device_dirty():
            self._save_device()
        olm.clear_dirty()

    # --- one-time keys -------------------------------------------------------------------

    async def top_up(self, conn: Connection, remaining: int) -> None:
        """Upload fresh one-time keys when the server holds fewer than ONE_TIME_KEYS."""
        if remaining >= ONE_TIME_KEYS:
            return
        device = self.load()
        keys = device.new_one_time_keys(ONE_TIME_KEYS - remaining)
        self._save_device()  # persist the private halves before the server hands them out
        await conn.request(UploadKeys(id=next_request_id(), one_time_keys=keys))
