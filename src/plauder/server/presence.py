"""Presence: who is online now, last seen times, watchers, and the privacy setting."""

from collections import defaultdict
from typing import Protocol

from plauder.clock import Clock
from plauder.protocol import codec
from plauder.protocol.frames import Presence as PresenceFrame
from plauder.server.accounts import number_or_error
from plauder.server.storage import PresenceInfo, Store

MAX_WATCHED = 1000


class Watcher(Protocol):
    """A connection that receives presence pushes."""

    async def push(self, data: bytes) -> None:
        """Send an encoded frame."""
        ...


class PresenceService:
    """Tracks online accounts in memory and tells watchers when that changes."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._online: dict[str, int] = defaultdict(int)
        self._watchers: dict[str, set[Watcher]] = defaultdict(set)
        self._watching: dict[Watcher, list[str]] = {}

    def is_online(self, number: str) -> bool:
        """Whether any device of the account is connected."""
        return self._online.get(number, 0) > 0

    async def connected(self, number: str) -> None:
        """A device of the account authenticated."""
        self._online[number] += 1
        if self._online[number] == 1:
            await self._announce(number)

    async def disconnected(self, account_id: int, number: str) -> None:
        """A device of the account went away."""
        self._online[number] -= 1
        if self._online[number] <= 0:
            del self._online[number]
            await self._store.set_last_seen(account_id, self._clock.now_ms())
            await self._announce(number)

    async def set_visible(self, account_id: int, number: str, visible: bool) -> None:
        """Change who may see the account's presence, and tell watchers."""
        await self._store.set_last_seen_visible(account_id, visible)
        await self._announce(number, changed_visibility=True)

    async def watch(self, conn: Watcher, numbers: list[str]) -> list[bytes]:
        """Replace what conn watches; returns the current presence of each, encoded."""
        wanted = list(dict.fromkeys(number_or_error(n) for n in numbers[:MAX_WATCHED]))
        self.unwatch(conn)
        self._watching[conn] = wanted
        for number in wanted:
            self._watchers[number].add(conn)
        infos = await self._store.presence_info(wanted)
        return [codec.encode(self._frame(info)) for info in infos]

    def unwatch(self, conn: Watcher) -> None:
        """Forget everything conn watched."""
        for number in self._watching.pop(conn, []):
            watchers = self._watchers.get(number)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[number]

    def _frame(self, info: PresenceInfo) -> PresenceFrame:
        if not info.last_seen_visible:
            return PresenceFrame(number=info.number, online=False, last_seen=None)
        return PresenceFrame(
            number=info.number, online=self.is_online(info.number), last_seen=info.last_seen
        )

    async def _announce(self, number: str, changed_visibility: bool = False) -> None:
        watchers = self._watchers.get(number)
        if not watchers:
            return
        infos = await self._store.presence_info([number])
        if not infos or not (infos[0].last_seen_visible or changed_visibility):
            return  # a hidden account's comings and goings cause no push at all
        data = codec.encode(self._frame(infos[0]))
        for conn in list(watchers):
            await conn.push(data)
