"""Entry point of the `plauder` command: argument parsing and dispatch."""

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import platformdirs

from plauder import __version__
from plauder.cli import chat, db, serve
from plauder.cli.output import fail
from plauder.errors import PlauderError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one subcommand per action."""
    p = argparse.ArgumentParser(
        prog="plauder",
        description="plauder: an end-to-end encrypted messenger. Server and client in one command.",
    )
    p.add_argument("--version", action="version", version=f"plauder {__version__}")
    _global_options(p)
    p.set_defaults(
        account=None,
        config_dir=Path(
            os.environ.get("PLAUDER_CONFIG_DIR") or platformdirs.user_data_dir("plauder")
        ),
        json=False,
    )
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.add_parser(sub, common)
    db.add_parser(sub, common)
    chat.add_parsers(sub, common)
    return p


def _global_options(p: argparse.ArgumentParser) -> None:
    """Options allowed before and after the command name."""
    hide = argparse.SUPPRESS
    p.add_argument("-a", "--account", default=hide, help="your number, e.g. +4915100000001")
    p.add_argument(
        "--config-dir",
        type=Path,
        default=hide,
        help="where profiles live (env PLAUDER_CONFIG_DIR; default: the user data folder)",
    )
    p.add_argument("--json", action="store_true", default=hide, help="one JSON object per line")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line and exit with its status."""
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(args.run(args)) if args.is_async else args.run(args)
    except KeyboardInterrupt:
        code = 130
    except PlauderError as exc:
        fail(str(exc))
        code = 1
    sys.exit(code or 0)
