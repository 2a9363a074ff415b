"""`plauder serve`: run a server."""

import argparse
from pathlib import Path
from typing import Any

from plauder.server.config import Config, load_config, option_names

_FLAGS = ("host", "port", "data", "database", "redis", "node_id", "workers")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the `serve` subcommand."""
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run a plauder server",
        description="Run a server. Options: flags > PLAUDER_* environment > TOML file > defaults.",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--data", type=Path, help="data folder (default ./plauder-data)")
    p.add_argument("--database", help="postgresql:// URL (default: SQLite in the data folder)")
    p.add_argument("--redis", help="redis:// URL shared by the nodes of a cluster")
    p.add_argument("--node-id", dest="node_id", help="this node's unique name in a cluster")
    p.add_argument("--workers", type=int, help="processes sharing the port (needs --redis)")
    p.add_argument("--config", type=Path, help="TOML file with options (env PLAUDER_CONFIG)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other option, e.g. --set sms_sender=http; options: "
        + ", ".join(n for n in option_names() if n not in ("host", "port", "data")),
    )
    p.set_defaults(run=run, is_async=False)


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve until stopped."""
    flags: dict[str, Any] = {name: getattr(args, name) for name in _FLAGS}
    for item in args.set:
        name, _, value = item.partition("=")
        flags[name.strip()] = value
    config: Config = load_config(flags, config_file=args.config)
    from plauder.server import app  # imported here: the client commands start faster without it

    app.run(config)
    return 0
