"""Which connection holds which device, and delivery of envelopes to it."""

from typing import Protocol

from plauder.server.delivery import DeviceFeed


class Receiver(Protocol):
    """A connection as the router sees it."""

    feed: DeviceFeed | None  # pushes its device's stored envelopes in eid order

    async def push(self, data: bytes) -> None:
        """Push an encoded frame that is not stored (ephemeral, keys_low)."""
        ...

    async def replaced(self) -> None:
        """Close because the same device connected again."""
        ...


class LocalRouter:
    """The in-process router of a single server process."""

    def __init__(self) -> None:
        self._by_device: dict[int, Receiver] = {}

    async def attach(self, device_pk: int, conn: Receiver) -> None:
        """Make conn the device's connection, closing a previous one."""
        old = self._by_device.get(device_pk)
        self._by_device[device_pk] = conn
        if old is not None and old is not conn:
            await old.replaced()

    def detach(self, device_pk: int, conn: Receiver) -> None:
        """Forget conn if it is still the device's connection."""
        if self._by_device.get(device_pk) is conn:
            del self._by_device[device_pk]

    async def evict(self, device_pk: int) -> None:
        """Close the connection of a device that no longer exists."""
        conn = self._by_device.pop(device_pk, None)
        if conn is not None:
            await conn.replaced()

    def connected(self, device_pk: int) -> bool:
        """Whether the device has a connection here."""
        return device_pk in self._by_device

    async def deliver(self, device_pk: int, eid: int, data: bytes) -> None:
        """Offer a stored envelope to the device's connection, if it has one."""
        conn = self._by_device.get(device_pk)
        if conn is not None and conn.feed is not None:
            await conn.feed.offer(eid, data)

    async def push(self, device_pk: int, data: bytes) -> bool:
        """Push an unstored frame; False when the device is not connected."""
        conn = self._by_device.get(device_pk)
        if conn is None:
            return False
        await conn.push(data)
        return True

    def __len__(self) -> int:
        return len(self._by_device)
