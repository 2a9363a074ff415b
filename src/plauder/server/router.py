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
        """Close: the same device connected again, or the device no longer exists."""
        ...


class Router(Protocol):
    """Which connection holds which device, in this process or on any node of a cluster.

    `deliver` and `push` are called with the frames of every send, so they must
    not wait for anything remote: a device held elsewhere gets its frame later
    (or, for a stored envelope, from the store when it reconnects or resyncs).
    """

    async def start(self) -> None:
        """Begin background work (none for a single process)."""
        ...

    async def close(self) -> None:
        """Stop background work; connections are closed by the gateway before."""
        ...

    async def attach(self, device_pk: int, conn: Receiver) -> None:
        """Make conn the device's connection, closing a previous one wherever it is."""
        ...

    def detach(self, device_pk: int, conn: Receiver) -> None:
        """Forget conn if it is still the device's connection."""
        ...

    async def evict(self, device_pk: int) -> None:
        """Close the connection of a device that no longer exists, wherever it is."""
        ...

    async def deliver(self, device_pk: int, eid: int, data: bytes) -> None:
        """Offer a stored envelope to the device's connection, if it has one."""
        ...

    async def push(self, device_pk: int, data: bytes) -> None:
        """Push an unstored frame to the device's connection, if it has one."""
        ...

    def flush(self) -> None:
        """Write what `deliver` and `push` queued for other nodes now.

        Called before a `sent` answer: a node killed right after answering
        must not take the publishes of what it confirmed with it.
        """
        ...

    def stats(self) -> dict[str, int]:
        """Counters for /metrics."""
        ...

    def __len__(self) -> int:
        """Devices whose connection is in this process."""
        ...


class LocalRouter:
    """The in-process router of a single server process."""

    def __init__(self) -> None:
        self._by_device: dict[int, Receiver] = {}

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to stop."""

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

    async def push(self, device_pk: int, data: bytes) -> None:
        """Push an unstored frame, if the device is connected."""
        conn = self._by_device.get(device_pk)
        if conn is not None:
            await conn.push(data)

    def flush(self) -> None:
        """Nothing leaves this process."""

    def stats(self) -> dict[str, int]:
        """No counters beyond the number of devices."""
        return {}

    def __len__(self) -> int:
        """Devices connected to this process."""
        return len(self._by_device)
