"""Start, measure and stop `plauder serve` as a subprocess on 127.0.0.1."""

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped]

LISTEN = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """The server did not start, or died."""


@dataclass(frozen=True)
class Snapshot:
    """Resource use of the server process at one moment."""

    t: float  # time.monotonic()
    cpu: float  # user + system seconds, all threads
    main_cpu: float  # user + system seconds of the main thread (the event loop)
    sys_cpu: float  # system (kernel) seconds, all threads
    rss: int  # bytes
    threads: int
    fds: int

    def cpu_since(self, before: "Snapshot") -> float:
        """CPU seconds used between two snapshots."""
        return self.cpu - before.cpu

    @classmethod
    def of_tree(cls, root: psutil.Process) -> "Snapshot":
        """A process with its children: their CPU (also of children that already exited
        and were reaped), main threads, RSS, threads and open files added up."""
        cpu = main = kernel = 0.0
        rss = threads = fds = 0
        with root.oneshot():
            times = root.cpu_times()
            cpu += times.children_user + times.children_system
            kernel += times.children_system
            processes = [root, *root.children(recursive=True)]
        for proc in processes:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    own = [t for t in proc.threads() if t.id == proc.pid]
                    cpu += times.user + times.system
                    kernel += times.system
                    main += own[0].user_time + own[0].system_time if own else 0.0
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    fds += proc.num_fds()
            except psutil.NoSuchProcess:
                continue  # exited meanwhile: its CPU shows in the parent's children times
        return cls(time.monotonic(), cpu, main, kernel, rss, threads, fds)

    @classmethod
    def total(cls, parts: "list[Snapshot]") -> "Snapshot":
        """Several processes (taken at nearly the same time) as one."""
        return cls(
            t=max(p.t for p in parts),
            cpu=sum(p.cpu for p in parts),
            main_cpu=sum(p.main_cpu for p in parts),
            sys_cpu=sum(p.sys_cpu for p in parts),
            rss=sum(p.rss for p in parts),
            threads=sum(p.threads for p in parts),
            fds=sum(p.fds for p in parts),
        )


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench process dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class ListeningProcess:
    """A subprocess that prints `listening on http://127.0.0.1:<port>` when it serves.

    `name` is what error messages call it; a subclass builds the command and calls
    `_launch` from its `start`.
    """

    name = "server"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._ps: psutil.Process | None = None
        self._starts = 0

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def _launch(
        self, cmd: list[str], env: dict[str, str] | None, starts: int, timeout: float
    ) -> None:
        """Run `cmd` and wait until `starts` more processes say where they listen."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            )
        self._starts += starts
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTEN.findall(self.log_text())
            if len(found) >= self._starts:
                self.url = found[-1]
                self._ps = psutil.Process(self.proc.pid)
                return
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            time.sleep(0.02)
        self.stop()
        raise ServerError(f"{self.name} did not start in {timeout:.0f} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process printed."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise ServerError if the process died."""
        if not self.alive():
            raise ServerError(f"the {self.name} died:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode


class ServerProcess(ListeningProcess):
    """One `python -m plauder.cli serve` on 127.0.0.1 and a free port.

    With `workers` > 1 it is a supervisor and that many worker processes sharing the
    port; CPU, RSS and profiles then cover all of them.
    """

    def __init__(
        self,
        data: Path,
        options: dict[str, str],
        src: Path | None = None,
        flags: list[str] | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(data.parent / f"{data.name}.log")
        self.data = data
        self.options = dict(options)
        self.src = src  # another plauder source tree (its `src` folder) to run instead
        self.flags = list(flags or [])  # e.g. --database, --redis, --node-id
        self.workers = workers

    @property
    def pids(self) -> list[int]:
        """The processes that serve (the workers under a supervisor)."""
        if self.workers <= 1 or self._ps is None:
            return [self.pid]
        return [p.pid for p in self._ps.children()]

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint."""
        return self.url.replace("http://", "ws://") + "/v1/ws"

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it (every worker) prints its address."""
        cmd = [sys.executable, "-m", "plauder.cli", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", "0", "--data", str(self.data), *self.flags]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        for name, value in self.options.items():
            cmd += ["--set", f"{name}={value}"]
        self.data.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src.resolve())
        self._launch(cmd, env, self.workers, timeout)

    def snapshot(self) -> Snapshot:
        """CPU time, RSS, threads and open files of the server now."""
        self.check()
        assert self._ps is not None
        return Snapshot.of_tree(self._ps)

    async def metrics(self, timeout: float = 10.0) -> dict[str, float]:
        """The counters of /metrics, by name without the `plauder_` prefix."""
        out: dict[str, float] = {}
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.get(self.url + "/metrics") as resp,
        ):
            text = await resp.text()
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name.startswith("plauder_") and value:
                out[name.removeprefix("plauder_")] = float(value)
        return out
