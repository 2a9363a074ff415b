"""Load-generator processes: each runs a command loop, driven by the bench over a pipe."""

import asyncio
import contextlib
import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

Args = dict[str, Any]


class WorkerError(RuntimeError):
    """A load generator failed or did not answer in time."""


class Handler(Protocol):
    """What a load-generator process runs: commands in, results out."""

    async def handle(self, cmd: str, args: Args) -> Args:
        """Run one command and return its result."""
        ...

    async def close(self) -> None:
        """Release everything (connections) before the process exits."""
        ...


HandlerFactory = Callable[[Args], Handler]


class Commands:
    """A Handler that runs command `x` as its method `cmd_x(**args)`."""

    async def handle(self, cmd: str, args: Args) -> Args:
        """Dispatch a command to the method of the same name."""
        method = getattr(self, "cmd_" + cmd, None)
        if method is None:
            raise ValueError(f"unknown command {cmd!r}")
        result: Args = await method(**args)
        return result

    async def close(self) -> None:
        """Nothing to release by default."""


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def process_cpu() -> float:
    """User + system CPU seconds of this process so far."""
    t = os.times()
    return t.user + t.system


async def receive(conn: Connection) -> Any:
    """Wait without blocking the loop until the pipe has a message, and read it."""
    loop = asyncio.get_running_loop()
    fd = conn.fileno()
    while not conn.poll():
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
            # the loop made the socket non-blocking: a large send or recv would fail
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)
    return conn.recv()


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _entry(factory: HandlerFactory, spec: Args, conn: Connection) -> None:
    raise_file_limit()
    import uvloop

    uvloop.run(_serve(factory, spec, conn))


async def _serve(factory: HandlerFactory, spec: Args, conn: Connection) -> None:
    handler = factory(spec)
    try:
        while True:
            try:
                msg = await receive(conn)
            except (EOFError, OSError):
                return  # the bench went away
            if msg is None:
                return
            cmd, args = msg
            cpu = process_cpu()
            try:
                result = await handler.handle(cmd, args)
            except Exception:
                conn.send(("error", traceback.format_exc()))
                continue
            result["cpu"] = process_cpu() - cpu
            conn.send(("ok", result))
    finally:
        await handler.close()


class Pool:
    """A fixed set of load-generator processes, each with its own spec."""

    def __init__(self, factory: HandlerFactory, specs: list[Args]) -> None:
        self._factory = factory
        self._specs = specs
        self._procs: list[BaseProcess] = []
        self._conns: list[Connection] = []
        self.watch: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def pids(self) -> list[int]:
        """Process ids of the generators."""
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self) -> None:
        """Start one process per spec."""
        ctx = multiprocessing.get_context("spawn")
        for spec in self._specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_entry, args=(self._factory, spec, child), daemon=True, name="bench-load"
            )
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)

    async def call(self, cmd: str, args: Args | list[Args], timeout: float) -> list[Args]:
        """Run a command in every generator (per-generator args if a list); all results.

        `self.watch`, if set, is called every second meanwhile (to fail fast when the
        server dies); whatever it raises ends the call.
        """
        per = args if isinstance(args, list) else [args] * len(self._conns)
        for conn, a in zip(self._conns, per, strict=True):
            conn.send((cmd, a))
        gathered = asyncio.ensure_future(asyncio.gather(*(receive(c) for c in self._conns)))
        deadline = time.monotonic() + timeout
        try:
            while not gathered.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerError(f"load generators did not finish {cmd!r} in {timeout:.0f} s")
                await asyncio.wait({gathered}, timeout=min(1.0, left))
                if self.watch is not None and not gathered.done():
                    self.watch()
            replies = gathered.result()
        except EOFError as exc:
            raise WorkerError(f"a load generator died during {cmd!r}") from exc
        finally:
            if not gathered.done():
                gathered.cancel()
        results = []
        for status, value in replies:
            if status != "ok":
                raise WorkerError(f"a load generator failed in {cmd!r}:\n{value}")
            results.append(value)
        return results

    def stop(self, timeout: float = 20.0) -> None:
        """Ask every generator to exit, then terminate and kill what remains, by pid."""
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self._conns:
            conn.close()
        self._procs.clear()
        self._conns.clear()
