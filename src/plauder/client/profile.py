"""Who this device is, as its local store remembers it: number, servers, device id, account key."""

from collections.abc import Iterable

from plauder.client.errors import NotRegistered
from plauder.client.servers import parse_servers
from plauder.client.store import LocalStore
from plauder.crypto import AccountKey


class Profile:
    """The identity settings of one device, read from its local store."""

    def __init__(self, number: str, store: LocalStore) -> None:
        self.number = number
        self.store = store

    @property
    def servers(self) -> list[str]:
        """The server URLs of this profile, as given (the client tries them in its own order)."""
        value = self.store.get_setting("servers")
        return value.split() if value else []

    def set_servers(self, servers: Iterable[str]) -> list[str]:
        """Replace the server URLs (each value may hold several, comma separated); returns them."""
        urls = parse_servers(servers)
        self.store.put_setting("servers", " ".join(urls))
        return urls

    @property
    def last_server(self) -> str | None:
        """The server URL that last accepted this device (or its registration)."""
        return self.store.get_setting("last_server")

    def remember_server(self, server: str) -> None:
        """Record the server URL that worked, to try it first next time."""
        if self.last_server != server:
            self.store.put_setting("last_server", server)

    @property
    def device_id(self) -> int | None:
        """This device's id, once registered."""
        value = self.store.get_setting("device_id")
        return int(value) if value else None

    @property
    def registered(self) -> bool:
        """Whether registration finished."""
        return self.device_id is not None

    @property
    def account_key(self) -> AccountKey:
        """The account's identity key."""
        raw = self.store.get_secret("account_key")
        if raw is None:
            raise NotRegistered("no account key yet: register and verify first")
        return AccountKey.from_private_bytes(raw)
