"""The composition root: builds every server object once and runs the server."""

import asyncio
import contextlib
import gc
import hmac
import logging
import os
import resource
import secrets
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from plauder.clock import Clock, SystemClock
from plauder.errors import PlauderError
from plauder.server import http, logs, workers
from plauder.server.accounts import Accounts, code_limit
from plauder.server.blobs import BlobStore, DiskBlobStore
from plauder.server.calls import Calls, load_turn_secret
from plauder.server.config import Config, ConfigError
from plauder.server.errors import StorageError
from plauder.server.gateway import Gateway
from plauder.server.groups import Groups
from plauder.server.keys import Keys
from plauder.server.media import MediaService
from plauder.server.media_http import MediaHttp
from plauder.server.media_tokens import MediaTokens
from plauder.server.messages import Messages
from plauder.server.metrics import Metrics
from plauder.server.presence import LocalBoard, PresenceBoard, PresenceService
from plauder.server.ratelimit import KeyedLimiter, KeyLimiter
from plauder.server.router import LocalRouter, Router
from plauder.server.sms import CodeSender, ConsoleSender, HttpSender
from plauder.server.storage.factory import open_store

if TYPE_CHECKING:
    from plauder.server.cluster import RedisLink

log = logging.getLogger(__name__)


class Server:
    """One plauder server process: storage, services, gateway and HTTP site."""

    def __init__(
        self, config: Config, clock: Clock | None = None, reuse_port: bool = False
    ) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.clock = clock or SystemClock()
        turn_secret = load_turn_secret(config)  # before anything is created on disk
        self.metrics = Metrics()
        self.store = open_store(config)
        self.secret = load_secret(config.secret_path)
        self.sender: CodeSender = (
            HttpSender(config.sms_http_url) if config.sms_sender == "http" else ConsoleSender()
        )
        # one process: delivery, presence and limits in memory; a cluster: through Redis
        self.link: RedisLink | None = None
        self.router: Router
        board: PresenceBoard
        per_number: KeyLimiter
        if config.redis:
            # the Redis client loads only for a cluster node
            from plauder.server import cluster

            self.link = cluster.RedisLink(config.redis, config.redis_namespace, config.node_id)
            self.router = cluster.RedisRouter(self.link, config.resync_seconds)
            board = cluster.RedisPresence(self.link)
            per_number = cluster.RedisLimiter(self.link, "code", *code_limit(config))
        else:
            self.router = LocalRouter()
            board = LocalBoard()
            per_number = KeyedLimiter(self.clock, *code_limit(config))
        self.presence = PresenceService(self.store, self.clock, board)
        self.blobs: BlobStore = DiskBlobStore(config.media_path)
        self.media = MediaService(
            self.store, self.blobs, MediaTokens(self.secret), self.clock, config, self.metrics
        )
        self.gateway = Gateway(
            config=config,
            clock=self.clock,
            store=self.store,
            router=self.router,
            accounts=Accounts(self.store, self.sender, self.clock, config, self.secret, per_number),
            keys=Keys(self.store, config),
            messages=Messages(self.store, self.router, self.clock, config, self.metrics),
            groups=Groups(self.store, self.router, self.clock, config, self.metrics),
            media=self.media,
            calls=Calls(config, turn_secret, self.clock, self.metrics),
            presence=self.presence,
            metrics=self.metrics,
        )
        self.app = web.Application()
        self.app.router.add_get("/v1/ws", self.gateway.handle)
        self.app.add_routes(http.routes(self.metrics, self._store_metrics, self._health))
        self.app.add_routes(MediaHttp(self.media, self.metrics).routes())
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    def _store_metrics(self) -> dict[str, int]:
        return {
            "db_batches": self.store.batches,
            "db_operations": self.store.operations,
            "devices_connected": len(self.router),
            **self.router.stats(),
        }

    async def start(self) -> None:
        """Open storage and start listening."""
        await self.store.start()
        await self.blobs.start()
        if self.link is not None:
            await self.link.start()
        await self.router.start()
        await self._check_secret()
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.config.shutdown_timeout_seconds,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.config.host,
            self.config.port,
            backlog=self.config.backlog,
            reuse_port=self.reuse_port or None,
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def _health(self) -> str | None:
        """Why this node should get no new connections, or None when it should."""
        if not self.gateway.accepting:
            return "draining"
        if not self.store.healthy:
            return "storage down"
        return None

    async def _check_secret(self) -> None:
        """Refuse to start with a secret other than the one the cluster's nodes use."""
        mine = hmac.new(self.secret, b"plauder secret fingerprint", "sha256").hexdigest()[:32]
        if await self.store.claim_setting("secret_fingerprint", mine) != mine:
            raise ConfigError(
                f"the server secret in {self.config.secret_path} differs from the one the "
                "other nodes of this database use: copy server.key from one of them "
                "(option secret_file)"
            )

    async def stop(self) -> None:
        """Stop accepting, finish running requests, close connections and storage."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.gateway.accepting and self.config.drain_seconds > 0:
            # /health answers 503 now: give load balancers time to notice before closing
            self.gateway.accepting = False
            await asyncio.sleep(self.config.drain_seconds)
        await self.gateway.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.router.close()
        if self.link is not None:
            await self.link.close()
        await self.sender.close()
        await self.blobs.close()
        await self.store.close()

    async def _sweep_forever(self) -> None:
        ttl_ms = self.config.envelope_ttl_days * 86_400_000
        dedup_ms = self.config.dedup_ttl_days * 86_400_000
        while True:
            try:
                n = await self.store.sweep(self.clock.now_ms(), ttl_ms, dedup_ms)
                if n:
                    log.info("swept %d expired envelopes", n)
            except StorageError as exc:
                log.warning("sweep failed: %s", exc)
            try:
                n = await self.media.sweep()
                if n:
                    log.info("swept %d expired media", n)
            except (StorageError, OSError) as exc:
                log.warning("media sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(self.config.sweep_interval_seconds)


def load_secret(path: Path) -> bytes:
    """The server's own 32-byte secret, created (mode 0600) on first start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
        f.flush()
        os.fsync(f.fileno())
    return secret


def raise_file_limit() -> None:
    """Raise the soft limit on open files to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: Config, supervisor: int | None = None) -> None:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully.

    A worker (supervisor is its parent's pid) also stops when its supervisor is gone.
    """
    server = Server(config, reuse_port=supervisor is not None)
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from exc
    except PlauderError:
        await server.stop()
        raise
    # start-up objects never become garbage: keep them out of every collection, and
    # collect the young generation less often (frames allocate many short-lived objects)
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    url = f"http://{config.host}:{server.port}"
    print(f"plauder: listening on {url} (data in {config.data})", flush=True)
    if config.sms_sender == "console":
        print(
            f"plauder: register with: plauder -a +4915100000001 register --server {url}\n"
            "plauder: verification codes appear here (console sender)",
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if supervisor is not None:
        _watch_supervisor(loop, supervisor, stop)
    await stop.wait()
    print("plauder: shutting down", flush=True)
    await server.stop()
    print("plauder: stopped", flush=True)


def _watch_supervisor(loop: asyncio.AbstractEventLoop, parent: int, stop: asyncio.Event) -> None:
    """Stop this worker once its supervisor is gone (checked every second)."""
    if workers.orphaned(parent):
        log.warning("supervisor gone: stopping")
        stop.set()
    else:
        loop.call_later(1.0, _watch_supervisor, loop, parent, stop)


def run(config: Config) -> None:
    """Entry point of `plauder serve`: one process, or a supervisor of several workers."""
    logs.setup(config.log_level, config.log_format)
    raise_file_limit()
    if config.workers > 1:
        load_secret(config.secret_path)  # created once, before the workers share it
        load_turn_secret(config)  # a bad secret file stops here, not each worker in a loop
        parent = os.getpid()
        workers.supervise(config, lambda worker: _run_loop(worker, parent))
        return
    _run_loop(config, None)


def _run_loop(config: Config, supervisor: int | None) -> None:
    runner_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        runner_factory = uvloop.new_event_loop
    if sys.platform == "win32":  # pragma: no cover
        runner_factory = None
    with asyncio.Runner(loop_factory=runner_factory) as runner:
        runner.run(serve(config, supervisor))
