"""Who this device is, as its local store remembers it: number, servers, device id, account key."""

from plauder.client.errors import NotRegistered
from plauder.client.store import LocalStore
from plauder.crypto import AccountKey


class Profile:
    """The identity settings of one device, read from its local store."""

    def __init__(self, number: str, store: LocalStore) -> None:
        self.number = number
        self.store = store

    @property
    def servers(self) -> list[str]:
        """The server URLs of this profile, in the order they are tried."""
        value = self.store.get_setting("servers")
        return value.split() if value else []

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
