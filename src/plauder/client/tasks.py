"""The client's side tasks (transmissions, receipts): started, awaited and cancelled together."""

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    """A set of fire-and-forget tasks that stay referenced until they finish."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a coroutine on the side; returns its task."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks still running, as of now."""
        return list(self._tasks)
