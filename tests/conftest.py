"""Fixtures shared by all tests: a real server process and registered SDK clients."""

import asyncio
import concurrent.futures
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import hypothesis  # noqa: F401 - imported up front: a late import trips a CPython 3.11.7 AST bug
import pytest

from plauder.client import Client
from plauder.server.config import load_config
from plauder.server.storage.base import Store
from plauder.server.storage.factory import open_store
from tests.services import Coturn, Postgres, Redis

ROOT = Path(__file__).resolve().parent.parent
LISTEN = re.compile(r"listening on (http://\S+)")
# The integration suite runs once per backend: `sqlite` (embedded) or `postgres` (with Redis).
BACKEND = os.environ.get("PLAUDER_TEST_BACKEND", "sqlite")


class ServerProcess:
    """`plauder serve` running as a subprocess on 127.0.0.1 and a free port."""

    def __init__(
        self, data: Path, options: dict[str, str] | None = None, pg: Postgres | None = None
    ) -> None:
        self.data = data
        self.options = dict(options or {})
        self.pg = pg  # the PostgreSQL cluster holding its database, if any
        self.log_path = data.parent / f"{data.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.starts = 0

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.data / "plauder.db"

    @property
    def storage(self) -> list[Path]:
        """Every folder that holds the server's data: its own and the database's."""
        return [self.data] + ([self.pg.data] if self.pg else [])

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        """Run SQL (with `?` parameters) on the server's database, as an operator could."""
        database = self.options.get("database")
        if not database:
            with sqlite3.connect(self.db_path) as db:
                return [tuple(r) for r in db.execute(query, params).fetchall()]

        async def run() -> list[tuple[object, ...]]:
            import asyncpg

            from plauder.server.storage.postgres_sends import numbered

            con = await asyncpg.connect(database)
            try:
                return [tuple(r) for r in await con.fetch(numbered(query), *params)]
            finally:
                await con.close()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run()).result()

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
        return code_for(number, [self])

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


def code_for(number: str, servers: list[ServerProcess]) -> str:
    """The last code for a number that any of these servers' console senders printed."""
    deadline = time.monotonic() + 10
    pattern = re.compile(rf"verification code for {re.escape(number)}: (\d{{6}})")
    while time.monotonic() < deadline:
        for server in servers:
            codes = pattern.findall(server.log_text())
            if codes:
                return str(codes[-1])
        time.sleep(0.02)
    raise AssertionError(f"no server printed a code for {number}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster for the whole session (each test gets its own databases)."""
    pg = Postgres()
    pg.start()
    yield pg
    pg.destroy()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    """A Redis server for the whole session (each server gets its own namespace)."""
    redis = Redis()
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(name="redis")
def own_redis() -> Iterator[Redis]:
    """A Redis of this test's own, which the test may restart or stop."""
    redis = Redis()
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def coturn() -> Iterator[Coturn]:
    """A coturn relay of this test's own on 127.0.0.1 (fails if `turnserver` is missing)."""
    turn = Coturn()
    turn.start()
    yield turn
    turn.stop()


@pytest.fixture
def backend_options(request: pytest.FixtureRequest) -> Callable[[str], dict[str, str]]:
    """Options that put a server on the backend under test: a fresh database per name."""
    if BACKEND == "sqlite":
        return lambda name: {}
    pg: Postgres = request.getfixturevalue("postgres")
    redis: Redis = request.getfixturevalue("redis_server")
    made: dict[str, dict[str, str]] = {}

    def options(name: str) -> dict[str, str]:
        if name not in made:
            url = pg.create_database()
            made[name] = {
                "database": url,
                "redis": redis.url,
                "redis_namespace": url.rsplit("/", 1)[1],
            }
        return made[name]

    return options


@pytest.fixture
async def store(
    tmp_path: Path, backend_options: Callable[[str], dict[str, str]]
) -> AsyncIterator[Store]:
    """A started store of the backend under test, empty."""
    config = load_config({"data": tmp_path / "store", **backend_options("store")}, env={})
    s = open_store(config)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
def server_factory(
    tmp_path: Path, backend_options: Callable[[str], dict[str, str]], request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with options; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def make(name: str = "server", **options: str) -> ServerProcess:
        merged = {**backend_options(name), **{k: str(v) for k, v in options.items()}}
        pg = request.getfixturevalue("postgres") if "database" in merged else None
        srv = ServerProcess(tmp_path / name, merged, pg)
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
