"""Presence: who is online now, last seen times, watchers, and the privacy setting."""

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Protocol

from plauder.clock import Clock
from plauder.protocol import codec
from plauder.protocol.frames import Presence as PresenceFrame
from plauder.server.accounts import number_or_error
from plauder.server.storage import PresenceInfo, Store

MAX_WATCHED = 1000

Notify = Callable[[str, bool], Awaitable[None]]  # (number, changed_visibility)
Lost = Callable[[int, str], Awaitable[None]]  # (account_id, number)


class Watcher(Protocol):
    """A connection that receives presence pushes."""

    async def push(self, data: bytes) -> None:
        """Send an encoded frame."""
        ...


class PresenceBoard(Protocol):
    """How many devices of each account are online, in this process or in a whole cluster."""

    def listen(self, notify: Notify, lost: Lost) -> None:
        """Call notify for every change announced anywhere, lost for accounts of dead nodes.

        `lost` runs on one node only, for each account whose last devices were
        on a node that stopped without saying so.
        """
        ...

    async def up(self, account_id: int, number: str) -> bool:
        """A device of the account came online here; True if it is the account's first anywhere."""
        ...

    async def down(self, account_id: int, number: str) -> bool:
        """A device of the account went offline here; True if it was the account's last anywhere."""
        ...

    async def online(self, numbers: list[str]) -> list[bool]:
        """Whether each account has a device online anywhere."""
        ...

    async def announce(self, number: str, changed_visibility: bool) -> None:
        """Tell every node's watchers of the account that its presence changed."""
        ...


class LocalBoard:
    """The online counts of a single process, in memory."""

    def __init__(self) -> None:
        self._online: dict[str, int] = {}
        self._notify: Notify | None = None

    def listen(self, notify: Notify, lost: Lost) -> None:
        """Call notify for every announcement (a process does not outlive itself: no lost)."""
        self._notify = notify

    async def up(self, account_id: int, number: str) -> bool:
        """Count a device; True for the account's first."""
        count = self._online[number] = self._online.get(number, 0) + 1
        return count == 1

    async def down(self, account_id: int, number: str) -> bool:
        """Uncount a device; True for the account's last."""
        count = self._online.get(number, 0) - 1
        if count > 0:
            self._online[number] = count
            return False
        self._online.pop(number, None)
        return True

    async def online(self, numbers: list[str]) -> list[bool]:
        """Whether each account has a device connected to this process."""
        return [number in self._online for number in numbers]

    async def announce(self, number: str, changed_visibility: bool) -> None:
        """Tell this process's watchers."""
        if self._notify is not None:
            await self._notify(number, changed_visibility)


class PresenceService:
    """Tracks online accounts on a board and tells watchers when that changes."""

    def __init__(self, store: Store, clock: Clock, board: PresenceBoard | None = None) -> None:
        self._store = store
        self._clock = clock
        self._board: PresenceBoard = board if board is not None else LocalBoard()
        self._board.listen(self._tell_watchers, self._gone)
        self._watchers: dict[str, set[Watcher]] = defaultdict(set)
        self._watching: dict[Watcher, list[str]] = {}

    async def is_online(self, number: str) -> bool:
        """Whether any device of the account is connected."""
        return (await self._board.online([number]))[0]

    async def connected(self, account_id: int, number: str) -> None:
        """A device of the account authenticated."""
        if await self._board.up(account_id, number):
            await self._board.announce(number, False)

    async def disconnected(self, account_id: int, number: str) -> None:
        """A device of the account went away."""
        if await self._board.down(account_id, number):
            await self._gone(account_id, number)

    async def _gone(self, account_id: int, number: str) -> None:
        """The account's last device went away: record last seen and tell watchers."""
        await self._store.set_last_seen(account_id, self._clock.now_ms())
        await self._board.announce(number, False)

    async def set_visible(self, account_id: int, number: str, visible: bool) -> None:
        """Change who may see the account's presence, and tell watchers."""
        await self._store.set_last_seen_visible(account_id, visible)
        await self._board.announce(number, True)

    async def watch(self, conn: Watcher, numbers: list[str]) -> list[bytes]:
        """Replace what conn watches; returns the current presence of each, encoded."""
        wanted = list(dict.fromkeys(number_or_error(n) for n in numbers[:MAX_WATCHED]))
        self.unwatch(conn)
        self._watching[conn] = wanted
        for number in wanted:
            self._watchers[number].add(conn)
        infos = await self._store.presence_info(wanted)
        online = await self._board.online([info.number for info in infos])
        return [codec.encode(_frame(info, on)) for info, on in zip(infos, online, strict=True)]

    def unwatch(self, conn: Watcher) -> None:
        """Forget everything conn watched."""
        for number in self._watching.pop(conn, []):
            watchers = self._watchers.get(number)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[number]

    async def _tell_watchers(self, number: str, changed_visibility: bool) -> None:
        """Push the account's presence to this node's watchers of it."""
        watchers = self._watchers.get(number)
        if not watchers:
            return
        infos = await self._store.presence_info([number])
        if not infos or not (infos[0].last_seen_visible or changed_visibility):
            return  # a hidden account's comings and goings cause no push at all
        data = codec.encode(_frame(infos[0], await self.is_online(number)))
        for conn in list(watchers):
            await conn.push(data)


def _frame(info: PresenceInfo, online: bool) -> PresenceFrame:
    """What a watcher may see of an account."""
    if not info.last_seen_visible:
        return PresenceFrame(number=info.number, online=False, last_seen=None)
    return PresenceFrame(number=info.number, online=online, last_seen=info.last_seen)
