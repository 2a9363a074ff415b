"""Several server processes on one port: SO_REUSEPORT lets the kernel spread connections."""

import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from plauder.server.config import Config

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 1.0


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) so that port 0 becomes one real port all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_config(config: Config, port: int, index: int) -> Config:
    """The configuration of worker `index`: the shared port and a node id of its own."""
    base = config.node_id or f"{socket.gethostname()}-{os.getpid()}"
    return dataclasses.replace(config, port=port, workers=1, node_id=f"{base}-w{index}")


def supervise(config: Config, serve_one: Callable[[Config], None]) -> int:
    """Fork `config.workers` processes running serve_one, restart any that dies, stop on signal.

    Workers exit by themselves when this process disappears (even by kill -9).
    """
    reservation = reserve_port(config.host, config.port)
    port = reservation.getsockname()[1]
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            reservation.close()
            code = 0
            try:
                serve_one(worker_config(config, port, index))
            except BaseException as exc:
                print(f"plauder: worker {index} failed: {exc}", file=sys.stderr, flush=True)
                code = 1
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(config.workers):
        spawn(index)
    print(f"plauder: {config.workers} workers share port {port}", flush=True)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        index = children.pop(pid)
        if stopping:
            continue
        log.warning("worker %d exited (status %d): starting it again", index, status)
        time.sleep(RESTART_DELAY_SECONDS)
        if not stopping:
            spawn(index)
    reservation.close()
    return 0


def orphaned(parent: int) -> bool:
    """Whether the supervisor that started this worker is gone."""
    return os.getppid() != parent
