"""Throwaway PostgreSQL, Redis, HAProxy, nginx and coturn processes on 127.0.0.1 for tests
and benchmarks."""

import contextlib
import glob
import os
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return path


class Postgres:
    """A PostgreSQL cluster in a temporary folder; stop() and start() keep its data."""

    def __init__(self, base_backup_of: "Postgres | None" = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="plauder-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._databases = 0
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        if base_backup_of is not None:  # a hot standby streaming from that primary
            source = ["-h", "127.0.0.1", "-p", str(base_backup_of.port), "-U", "plauder"]
            subprocess.run(
                _as_postgres(
                    [_pg_bin("pg_basebackup"), *source, "-D", str(self.data), "-R", "-X", "stream"]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            return
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "plauder",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            _as_postgres(
                [
                    _pg_bin("postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.dir),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=300",
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "plauder"],
                capture_output=True,
            )
            if done.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "postgres.log").read_text(errors="replace"))
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait for it to exit."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        if self.proc is not None:
            self.proc.wait(30)
            self.proc = None

    def kill(self) -> None:
        """Crash the server: SIGKILL to the postmaster (its backends follow)."""
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)
            self.proc = None

    def promote(self) -> None:
        """Turn a standby into a primary."""
        self.psql("SELECT pg_promote(true, 30)")

    def synchronous(self) -> None:
        """Commit only once a standby has the WAL (no acknowledged write lost on failover)."""
        self.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        self.psql("SELECT pg_reload_conf()")

    def url(self, database: str = "postgres") -> str:
        """The connection URL of a database."""
        return f"postgresql://plauder@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql; returns its output."""
        done = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "plauder",
                "-d",
                database,
                "-Atc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A Redis server without persistence; restart() keeps the port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The connection URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)

    def stop(self) -> None:
        """Kill the server (its data is gone, as after a crash)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.stop()
        self.start()


class Balancer:
    """A load balancer process in front of plauder nodes on 127.0.0.1."""

    name = "balancer"

    def __init__(self, backends: list[int]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"plauder-{self.name}-"))
        self.port = free_port()
        self.backends = backends
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """The configuration file's text."""
        raise NotImplementedError

    def command(self, config: Path) -> list[str]:
        """How to start it with that configuration file."""
        raise NotImplementedError

    def start(self) -> None:
        """Start it and wait until it listens."""
        cfg = self.dir / f"{self.name}.conf"
        cfg.write_text(self.config())
        log = open(self.dir / "output.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.command(cfg), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_port(self.port, timeout=10)
        except RuntimeError as exc:
            logs = [p.read_text(errors="replace") for p in self.dir.glob("*.log")]
            raise RuntimeError("\n".join(logs)) from exc

    def stop(self) -> None:
        """Stop it and delete its files."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class Haproxy(Balancer):
    """HAProxy balancing WebSocket connections over backends, round robin, checking /health."""

    name = "haproxy"

    def config(self) -> str:
        """The configuration file's text (also shown in docs/deploy.md)."""
        servers = "\n".join(
            f"    server node{i} 127.0.0.1:{port} check inter 500ms fall 2 rise 2"
            for i, port in enumerate(self.backends)
        )
        return f"""global
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    option redispatch
    retries 2
frontend plauder
    bind 127.0.0.1:{self.port}
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /health
{servers}
"""

    def command(self, config: Path) -> list[str]:
        """haproxy in the foreground."""
        return [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(config)]


class Nginx(Balancer):
    """nginx proxying WebSocket connections to backends (the http module, least_conn)."""

    name = "nginx"

    def config(self) -> str:
        """The configuration file's text (the proxy part is shown in docs/deploy.md)."""
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=2 fail_timeout=5s;"
            for port in self.backends
        )
        return f"""daemon off;
master_process off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    upstream plauder {{
        least_conn;
{servers}
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://plauder;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""

    def command(self, config: Path) -> list[str]:
        """nginx in the foreground with its files in this folder."""
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(config), "-p", str(self.dir)]


class Coturn:
    """A coturn TURN server on 127.0.0.1 with shared-secret (REST) credentials.

    It relays on 127.0.0.1 from `min_port` to `max_port` and allows loopback
    peers, so two processes on this machine can call each other through it.
    Give a plauder server `server_options()`; its `get_turn` answers then carry
    credentials this relay accepts.
    """

    def __init__(self, relay_ports: int = 100, realm: str = "plauder.test") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="plauder-coturn-"))
        self.port = _free_udp_and_tcp_port()
        self.min_port = _free_udp_range(relay_ports)
        self.max_port = self.min_port + relay_ports - 1
        self.realm = realm
        self.secret = secrets.token_hex(24)  # coturn's static-auth-secret
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (UDP and TCP)."""
        return ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        """Its TURN URL over UDP."""
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    @property
    def tcp_url(self) -> str:
        """Its TURN URL over TCP."""
        return f"turn:127.0.0.1:{self.port}?transport=tcp"

    @property
    def urls(self) -> list[str]:
        """Both URLs, UDP first (aiortc uses only the first)."""
        return [self.url, self.tcp_url]

    def server_options(self, secret: str | None = None) -> dict[str, str]:
        """Options for a plauder server that hands out credentials for this relay."""
        return {"turn_urls": ",".join(self.urls), "turn_secret": secret or self.secret}

    def command(self) -> list[str]:
        """How it is started (the command line docs/operations.md explains)."""
        server = shutil.which("turnserver") or "/usr/bin/turnserver"
        return [
            server,
            "-n",  # no configuration file
            "--listening-ip=127.0.0.1",
            f"--listening-port={self.port}",
            "--relay-ip=127.0.0.1",
            f"--min-port={self.min_port}",
            f"--max-port={self.max_port}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            f"--realm={self.realm}",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--allow-loopback-peers",  # only for tests: peers on this machine
            "--log-file=stdout",
            "--simple-log",
            f"--pidfile={self.dir / 'turn.pid'}",
            f"--userdb={self.dir / 'turndb'}",
            "--verbose",
        ]

    def start(self) -> None:
        """Start it and wait until it answers STUN on its UDP port."""
        if shutil.which("turnserver") is None and not Path("/usr/bin/turnserver").exists():
            raise RuntimeError("turnserver not found: apt-get install coturn")
        log = open(self.dir / "turnserver.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited:\n{self.log_text()}")
            if _stun_answers(self.address):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"turnserver did not answer STUN:\n{self.log_text()}")

    def log_text(self) -> str:
        """Everything it logged so far."""
        path = self.dir / "turnserver.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def allocations(self) -> list[str]:
        """The usernames of the relay allocations it granted so far, in order."""
        return re.findall(r"session \d+: new, realm=<[^>]*>, username=<([^>]*)>", self.log_text())

    def stop(self) -> None:
        """Stop it and delete its files."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_udp_and_tcp_port() -> int:
    """A port on 127.0.0.1 free for both TCP and UDP right now."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def _free_udp_range(count: int) -> int:
    """The first of `count` consecutive UDP ports on 127.0.0.1, all free right now.

    Drawn below Linux's ephemeral range (32768 on), where other sockets are less likely.
    """
    for _ in range(50):
        first = random.randrange(20_000, 32_768 - count)
        held: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return first
    raise RuntimeError(f"no {count} consecutive free UDP ports")


def _stun_answers(address: tuple[str, int]) -> bool:
    """Whether a STUN Binding request to the address gets a success response in 0.2 s."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(request, address)
            data = sock.recv(2048)
        except OSError:  # a timeout, or refused while nothing listens yet
            return False
    return data[:2] == b"\x01\x01" and data[8:20] == transaction
