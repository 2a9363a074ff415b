"""The Store protocol every backend implements, and the records it returns."""

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from plauder.protocol.frames import DeviceKeys, OutEnvelope, SignedKey

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A device as stored: its internal key and its signed public keys."""

    pk: int
    keys: DeviceKeys


@dataclass(frozen=True, slots=True)
class Registration:
    """The result of a successful verification."""

    account_id: int
    device_pk: int
    device_id: int
    removed_device_pks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AuthDevice:
    """What authentication needs to know about a device."""

    account_id: int
    device_pk: int
    signing_key: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """A stored envelope and the device it is queued for."""

    device_pk: int
    eid: int
    envelope: OutEnvelope


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """The result of storing one `send`."""

    ts: int
    duplicate: bool
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class QueuedEnvelope:
    """An envelope waiting for its device's ack."""

    eid: int
    sender: str
    sender_device: int
    type: int
    body: bytes
    ts: int
    group: bytes = b""  # the gid of a group envelope


@dataclass(frozen=True, slots=True)
class PresenceInfo:
    """An account's presence settings and last seen time."""

    account_id: int
    number: str
    last_seen_visible: bool
    last_seen: int | None


class CodeCheck(Enum):
    """Outcome of checking a verification code."""

    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    NO_CODE = "no_code"
    TOO_MANY_ATTEMPTS = "too_many_attempts"


@dataclass(frozen=True, slots=True)
class Sender:
    """The authenticated device a message comes from."""

    account_id: int
    number: str
    device_pk: int
    device_id: int


class Store(Protocol):
    """Durable state of the server; every method is one atomic operation."""

    batches: int  # group commits so far
    operations: int  # operations in them
    version: int  # schema version, once started

    @property
    def healthy(self) -> bool:
        """Whether the store can take operations (its thread or writers run)."""
        ...

    async def start(self) -> None:
        """Open the database and bring its schema up to date."""
        ...

    async def close(self) -> None:
        """Finish pending operations and close the database."""
        ...

    async def claim_setting(self, name: str, value: str) -> str:
        """Store a cluster setting unless it is set; returns the value in force."""
        ...

    async def run(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, write: bool = True
    ) -> T:
        """Run one operation of storage/groups.py or media.py atomically (`fn(tx, *args)`)."""
        ...

    # accounts and verification codes
    async def save_code(self, number: str, code_hash: bytes, expires_ms: int) -> None:
        """Store a new verification code for a number, replacing an older one."""
        ...

    async def check_code(
        self, number: str, code_hash: bytes, now_ms: int, max_attempts: int
    ) -> CodeCheck:
        """Count an attempt and compare the code; a correct code is consumed."""
        ...

    async def register(
        self,
        number: str,
        account_key: str,
        device: DeviceKeys,
        one_time_keys: list[SignedKey],
        fallback_key: SignedKey | None,
        now_ms: int,
    ) -> Registration:
        """Create or replace the account of a number with one new primary device."""
        ...

    async def auth_device(self, number: str, device_id: int) -> AuthDevice | None:
        """Look up a device for authentication."""
        ...

    # keys
    async def devices(
        self, number: str, claim: bool
    ) -> tuple[str, list[tuple[DeviceRow, SignedKey | None]], list[tuple[int, int]]] | None:
        """An account's key and devices; with claim, one pre-key each.

        Returns None for an unknown number; otherwise the account key, the
        devices with their claimed pre-key, and (device_pk, remaining one-time
        keys) of devices whose pool was drawn from.
        """
        ...

    async def upload_keys(
        self, device_pk: int, one_time_keys: list[SignedKey], fallback_key: SignedKey | None
    ) -> int:
        """Add one-time keys (and replace the fallback key); returns the new count."""
        ...

    async def count_one_time_keys(self, device_pk: int) -> int:
        """How many unclaimed one-time keys a device has."""
        ...

    # messages
    async def store_message(
        self, sender: Sender, cmid: bytes, envelopes: list[OutEnvelope], now_ms: int
    ) -> StoredMessage:
        """Check recipients and store all envelopes of one message atomically."""
        ...

    async def resolve_targets(
        self, sender: Sender, envelopes: list[OutEnvelope]
    ) -> tuple[Delivery, ...]:
        """Check recipients of an ephemeral message without storing it (eid 0)."""
        ...

    async def fetch_queued(
        self, device_pk: int, after_eid: int, limit: int
    ) -> list[QueuedEnvelope]:
        """Queued envelopes of a device after an envelope id, oldest first."""
        ...

    async def ack(self, device_pk: int, eids: list[int]) -> int:
        """Delete a device's envelopes; returns how many of them existed."""
        ...

    async def sweep(self, now_ms: int, envelope_ttl_ms: int, dedup_ttl_ms: int) -> int:
        """Delete expired envelopes, dedup records and codes; returns envelopes deleted."""
        ...

    # presence
    async def presence_info(self, numbers: list[str]) -> list[PresenceInfo]:
        """Presence settings and last seen of the known numbers among these."""
        ...

    async def set_last_seen(self, account_id: int, ts: int) -> None:
        """Record when an account was last online."""
        ...

    async def set_last_seen_visible(self, account_id: int, visible: bool) -> None:
        """Set whether others may see the account's presence."""
        ...
