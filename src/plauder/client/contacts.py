"""Contacts' devices: fetched, verified against the account key, trusted on first use."""

import asyncio
from collections.abc import Callable

from plauder import phone
from plauder.client.connection import next_request_id
from plauder.client.errors import ClientError, ServerError, UnknownContact, UntrustedDevices
from plauder.client.events import Event, IdentityChanged
from plauder.client.link import Link
from plauder.client.profile import Profile
from plauder.clock import Clock
from plauder.crypto import UntrustedDevice, verify_device
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import DeviceBundle, DeviceKeys, Devices, GetDevices


class Contacts:
    """Device lists of contacts (and of our own other devices), as far as we trust them."""

    def __init__(
        self, profile: Profile, link: Link, clock: Clock, events: asyncio.Queue[Event]
    ) -> None:
        self._profile = profile
        self._store = profile.store
        self._link = link
        self._clock = clock
        self._events = events
        self._identity_listeners: list[Callable[[IdentityChanged], None]] = []

    async def fetch(self, number: str, claim: bool) -> Devices:
        """Fetch a device list, check it against the trusted account key, remember it."""
        try:
            answer = await self._link.request(
                GetDevices(id=next_request_id(), number=number, claim=claim)
            )
        except ServerError as exc:
            if exc.code == ErrorCode.UNKNOWN_ACCOUNT:
                raise UnknownContact(f"{number} is not on this server") from exc
            raise
        assert isinstance(answer, Devices)
        self.adopt(number, answer.account_key, answer.devices)
        return answer

    def adopt(self, number: str, account_key: str, bundles: list[DeviceBundle]) -> None:
        """Check a fetched device list against the account key, trust it on first use, keep it.

        Raises UntrustedDevices if a device is not signed by the account key.
        """
        for bundle in bundles:
            try:
                verify_device(account_key, bundle.device)
            except UntrustedDevice as exc:
                raise UntrustedDevices(
                    f"a device of {number} is not signed by its account key: refusing to encrypt"
                ) from exc
        known = self._store.contact_key(number)
        if known != account_key:
            self._store.set_contact_key(number, account_key, self._clock.now_ms())
            if known is not None:
                changed = IdentityChanged(number, known, account_key)
                self._events.put_nowait(changed)
                for listener in self._identity_listeners:
                    listener(changed)
        devices = [b.device for b in bundles]
        if number == self._profile.number:
            devices = [d for d in devices if d.device_id != self._profile.device_id]
        self._store.set_devices(number, devices)

    def on_identity_changed(self, listener: Callable[[IdentityChanged], None]) -> None:
        """Call `listener` (inside the store's transaction, if any) when an account key changes."""
        self._identity_listeners.append(listener)

    async def sender_device(self, number: str, device_id: int) -> DeviceKeys | None:
        """A sender's device as we know it, fetching the list once if it is new to us."""
        for d in self._store.devices(number):
            if d.device_id == device_id:
                return d
        try:
            await self.fetch(number, claim=False)
        except (UnknownContact, UntrustedDevices):
            return None
        for d in self._store.devices(number):
            if d.device_id == device_id:
                return d
        return None

    async def account_key(self, number: str) -> str:
        """The account key we trust for a contact, fetched on first use."""
        key = self._store.contact_key(number)
        if key is None:
            await self.fetch(number, claim=False)
            key = self._store.contact_key(number)
        assert key is not None
        return key


def normalize(number: str) -> str:
    """A phone number in E.164 form (ClientError if it is not a valid number)."""
    try:
        return phone.normalize(number)
    except ValueError as exc:
        raise ClientError(f"{number}: {exc}") from exc
