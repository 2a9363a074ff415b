"""Fixtures shared by all tests: a real server process and registered SDK clients."""

import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import hypothesis  # noqa: F401 - imported up front: a late import trips a CPython 3.11.7 AST bug
import pytest

from plauder.client import Client

ROOT = Path(__file__).resolve().parent.parent
LISTEN = re.compile(r"listening on (http://\S+)")


class ServerProcess:
    """`plauder serve` running as a subprocess on 127.0.0.1 and a free port."""

    def __init__(self, data: Path, options: dict[str, str] | None = None) -> None:
        self.data = data
        self.options = dict(options or {})
        self.log_path = data.parent / f"{data.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.starts = 0

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.data / "plauder.db"

    def start(self) -> None:
        """Start the process and wait until it listens."""
        cmd = [
            sys.executable,
            "-m",
            "plauder.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data",
            str(self.data),
        ]
        for name, value in self.options.items():
            cmd += ["--set", f"{name}={value}"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = LISTEN.findall(self.log_text())
            if len(found) >= self.starts:
                self.url = found[-1]
                self.port = int(self.url.rsplit(":", 1)[1])
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log_text()}")
            time.sleep(0.02)
        raise RuntimeError(f"server did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def code_for(self, number: str) -> str:
        """The last verification code the console sender printed for a number."""
        deadline = time.monotonic() + 10
        pattern = re.compile(rf"verification code for {re.escape(number)}: (\d{{6}})")
        while time.monotonic() < deadline:
            codes = pattern.findall(self.log_text())
            if codes:
                return codes[-1]
            time.sleep(0.02)
        raise AssertionError(f"no code for {number} in the server log")

    def kill(self) -> None:
        """Crash the server: SIGKILL, no chance to flush anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """Stop the server gracefully; returns its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with options; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def make(name: str = "server", **options: str) -> ServerProcess:
        srv = ServerProcess(tmp_path / name, {k: str(v) for k, v in options.items()})
        srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        if srv.alive():
            srv.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A fresh server with default options."""
    return server_factory()


NUMBERS = [f"+49151000{i:05d}" for i in range(1, 100)]


@pytest.fixture
def numbers() -> Iterator[str]:
    """Distinct valid phone numbers."""
    return iter(NUMBERS)


async def register(server: ServerProcess, profiles: Path, number: str, **kw: object) -> Client:
    """Register a number through the real SDK and return its (not started) client."""
    client = Client(profiles / number.lstrip("+"), number, **kw)  # type: ignore[arg-type]
    await client.request_code([server.url])
    await client.verify(server.code_for(number))
    return client


@pytest.fixture
async def make_client(
    server: ServerProcess, tmp_path: Path, numbers: Iterator[str]
) -> AsyncIterator[Callable[..., object]]:
    """Register and start SDK clients on the default server; closed at the end."""
    clients: list[Client] = []

    async def make(start: bool = True, **kw: object) -> Client:
        client = await register(server, tmp_path / "profiles", next(numbers), **kw)
        clients.append(client)
        if start:
            await client.start()
        return client

    yield make
    for c in clients:
        await c.close()  # closing twice is harmless


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
