"""Throwaway PostgreSQL, Redis and HAProxy processes on 127.0.0.1 for tests and benchmarks."""

import contextlib
import glob
import os
import shutil
import signal
import socket
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
