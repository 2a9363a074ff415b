"""The Store methods both backends share: each runs one operation of storage/queries.py."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from plauder.protocol.frames import DeviceKeys, OutEnvelope, SignedKey
from plauder.server.storage import queries
from plauder.server.storage.base import (
    AuthDevice,
    CodeCheck,
    PresenceInfo,
    QueuedEnvelope,
    Registration,
    Sender,
    StoredMessage,
)
from plauder.server.storage.batch import AckOp, SendOp

T = TypeVar("T")


class SharedMethods:
    """Store methods over a backend's `_query` (one operation) and `_enqueue` (group commit)."""

    async def _query(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, write: bool = True
    ) -> T:
        raise NotImplementedError

    def _enqueue(self, op: SendOp | AckOp) -> asyncio.Future[Any]:
        raise NotImplementedError

    async def run(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, write: bool = True
    ) -> T:
        """Run one operation of storage/groups.py or media.py atomically (`fn(tx, *args)`)."""
        return await self._query(fn, *args, write=write)

    async def claim_setting(self, name: str, value: str) -> str:
        """Store a cluster setting unless it is set; returns the value in force."""
        return await self._query(queries.claim_setting, name, value)

    async def save_code(self, number: str, code_hash: bytes, expires_ms: int) -> None:
        """Store a new verification code for a number, replacing an older one."""
        await self._query(queries.save_code, number, code_hash, expires_ms)

    async def check_code(
        self, number: str, code_hash: bytes, now_ms: int, max_attempts: int
    ) -> CodeCheck:
        """Count an attempt and compare the code; a correct code is consumed."""
        return await self._query(queries.check_code, number, code_hash, now_ms, max_attempts)

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
        return await self._query(
            queries.register, number, account_key, device, one_time_keys, fallback_key, now_ms
        )

    async def auth_device(self, number: str, device_id: int) -> AuthDevice | None:
        """Look up a device for authentication."""
        return await self._query(queries.auth_device, number, device_id, write=False)

    async def devices(self, number: str, claim: bool) -> queries.DeviceList | None:
        """An account's key and devices; with claim, one pre-key each."""
        return await self._query(queries.devices, number, claim, write=claim)

    async def upload_keys(
        self, device_pk: int, one_time_keys: list[SignedKey], fallback_key: SignedKey | None
    ) -> int:
        """Add one-time keys (and replace the fallback key); returns the new count."""
        return await self._query(queries.upload_keys, device_pk, one_time_keys, fallback_key)

    async def count_one_time_keys(self, device_pk: int) -> int:
        """How many unclaimed one-time keys a device has."""
        return await self._query(queries.count_one_time_keys, device_pk, write=False)

    async def store_message(
        self, sender: Sender, cmid: bytes, envelopes: list[OutEnvelope], now_ms: int
    ) -> StoredMessage:
        """Check recipients and store all envelopes of one message atomically."""
        result: StoredMessage = await self._enqueue(SendOp(sender, cmid, envelopes, now_ms))
        return result

    async def fetch_queued(
        self, device_pk: int, after_eid: int, limit: int
    ) -> list[QueuedEnvelope]:
        """Queued envelopes of a device after an envelope id, oldest first."""
        return await self._query(queries.fetch_queued, device_pk, after_eid, limit, write=False)

    async def ack(self, device_pk: int, eids: list[int]) -> int:
        """Delete a device's envelopes; returns how many of them existed."""
        deleted: int = await self._enqueue(AckOp(device_pk, list(eids)))
        return deleted

    async def sweep(self, now_ms: int, envelope_ttl_ms: int, dedup_ttl_ms: int) -> int:
        """Delete expired envelopes, dedup records and codes; returns envelopes deleted."""
        return await self._query(queries.sweep, now_ms, envelope_ttl_ms, dedup_ttl_ms)

    async def presence_info(self, numbers: list[str]) -> list[PresenceInfo]:
        """Presence settings and last seen of the known numbers among these."""
        return await self._query(queries.presence_info, numbers, write=False)

    async def set_last_seen(self, account_id: int, ts: int) -> None:
        """Record when an account was last online."""
        await self._query(queries.set_last_seen, account_id, ts)

    async def set_last_seen_visible(self, account_id: int, visible: bool) -> None:
        """Set whether others may see the account's presence."""
        await self._query(queries.set_last_seen_visible, account_id, visible)
