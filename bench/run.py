"""`python -m bench.run [idle|pairs|backends|cross|e2e|group-fanout|media|calls ...] [options]`.

With no scenario, the default suite runs: idle with 19,000 connections; backends (pairs
with 1,000 clients, closed loop then paced at 2,000 messages/s, on SQLite and then on
PostgreSQL + Redis with 2 server workers); cross (2,000 messages/s across two nodes,
then on one); e2e with 10 pairs; group-fanout (one group of 1,000 online members, 20
group messages/s); media (files of 1 MiB and 100 MiB through the SDK, beside a plain
HTTP upload and download of the same bytes); calls (voice calls through the SDK: set-up time
on loopback, bytes per minute in default and low-data mode, then relay-only calls through a
coturn of the bench's own, 1, 2, 3, 4, 6, 8, ... at once until audio frames arrive late).
"""

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

from bench import report
from bench.backends import BACKENDS
from bench.harness import Settings
from bench.scenarios.calls import CallsParams, run_direct, run_relayed
from bench.scenarios.cluster import run_backends, run_cross, section
from bench.scenarios.e2e import E2eParams, run_e2e
from bench.scenarios.groups import GroupParams, run_groups
from bench.scenarios.idle import IdleParams, run_idle
from bench.scenarios.media import MediaParams, run_media
from bench.scenarios.pairs import MAX, PairsParams, run_pairs
from bench.workers import Args, raise_file_limit
from plauder.client.inbox import ACK_INTERVAL

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("idle", "pairs", "backends", "cross", "e2e", "group-fanout", "media", "calls")
DEFAULT_SUITE = ("idle", "backends", "cross", "e2e", "group-fanout", "media", "calls")
DEFAULT_RATES = [MAX, 2000.0]
CROSS_RATES = [2000.0]


def _rate(text: str) -> float:
    if text.lower() == "max":
        return MAX
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("a rate is 'max' or positive messages/s")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"{', '.join(SCENARIOS)} (default: {', '.join(DEFAULT_SUITE)})",
    )
    p.add_argument("--clients", type=int, default=1000, help="pairs: clients (half send)")
    p.add_argument("--messages", type=int, help="pairs: per sender (200); e2e: per sender (50)")
    p.add_argument("--in-flight", type=int, default=10, help="pairs: window per sender")
    p.add_argument(
        "--rate",
        type=_rate,
        action="append",
        help="pairs: offered messages/s in total, or 'max' for the closed loop; repeatable",
    )
    p.add_argument(
        "--duration", type=float, default=20.0, help="pairs, group-fanout: seconds per paced run"
    )
    p.add_argument("--warmup", type=int, default=10, help="pairs: unmeasured msgs per sender")
    p.add_argument("--connections", type=int, default=19_000, help="idle: connections")
    p.add_argument("--hold", type=float, default=10.0, help="idle: seconds to hold them")
    p.add_argument("--pairs", type=int, default=10, help="e2e: pairs of SDK clients")
    p.add_argument("--members", type=int, default=1000, help="group-fanout: online members")
    p.add_argument("--group-senders", type=int, default=10, help="group-fanout: members posting")
    p.add_argument(
        "--group-rate", type=float, default=20.0, help="group-fanout: group messages/s in total"
    )
    p.add_argument(
        "--offline-messages",
        type=int,
        default=50,
        help="group-fanout: messages stored while members are offline (storage per message)",
    )
    p.add_argument(
        "--media-size",
        type=float,
        action="append",
        metavar="MIB",
        help="media: a file size in MiB; repeatable (default: 1 and 100)",
    )
    p.add_argument(
        "--media-reps", type=int, help="media: sends per size (10 up to 16 MiB, 3 above)"
    )
    p.add_argument(
        "--setup-calls", type=int, default=20, help="calls: calls one after the other, timed"
    )
    p.add_argument(
        "--call-seconds",
        type=float,
        default=20.0,
        help="calls: length of the default and the low-data call (bytes per minute)",
    )
    p.add_argument(
        "--max-calls",
        type=int,
        default=64,
        help="calls: the ramp's last level (1, 2, 3, 4, 6, ...)",
    )
    p.add_argument(
        "--call-window", type=float, default=10.0, help="calls: seconds each ramp level is measured"
    )
    p.add_argument(
        "--workers",
        type=int,
        help="load-generator processes (idle 4, pairs 2, group-fanout 2, calls' ramp 4)",
    )
    p.add_argument(
        "--ack-interval",
        type=float,
        default=ACK_INTERVAL * 1000,
        help="pairs, group-fanout: ms between one connection's acks (0: ack whenever idle)",
    )
    p.add_argument("--repeat", type=int, default=1, help="run each scenario this many times")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="sqlite",
        help="idle, pairs, e2e, group-fanout, media, calls: SQLite, or PostgreSQL + Redis",
    )
    p.add_argument(
        "--server-workers",
        type=int,
        help="`plauder serve --workers` (postgres; default 1, in backends 2, in cross 1 per node)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server option, as for `plauder serve --set`",
    )
    p.add_argument("--data-dir", type=Path, help="where the server's data folder goes")
    p.add_argument(
        "--server-src",
        type=Path,
        help="run the server from another tree's src/ folder (PYTHONPATH), to compare changes",
    )
    p.add_argument("--keep", action="store_true", help="keep the server's data and log")
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the server with py-spy during measured phases (raw stacks in --out)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench-results", help="JSON results")
    args = p.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    return args


def _settings(args: argparse.Namespace) -> Settings:
    options = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set needs NAME=VALUE, got {item!r}")
        options[name.strip()] = value
    return Settings(
        server_options=options,
        data_dir=args.data_dir,
        keep=args.keep,
        profile_dir=args.out / "profiles" if args.profile else None,
        server_src=args.server_src,
        backend=args.backend,
        server_workers=args.server_workers or 1,
        ack_interval=args.ack_interval / 1000,
    )


def _pairs_params(args: argparse.Namespace, rates: list[float]) -> PairsParams:
    pairs = PairsParams(clients=args.clients, in_flight=args.in_flight, rates=args.rate or rates)
    pairs.messages = args.messages or pairs.messages
    pairs.duration = args.duration
    pairs.warmup = args.warmup
    pairs.workers = args.workers or pairs.workers
    return pairs


def _group_params(args: argparse.Namespace) -> GroupParams:
    group = GroupParams(members=args.members, senders=args.group_senders, rate=args.group_rate)
    group.duration = args.duration
    group.offline_messages = args.offline_messages
    group.workers = args.workers or group.workers
    return group


async def run_one(name: str, args: argparse.Namespace, results: dict[str, list[Args]]) -> None:
    """Run one scenario and add its results (pairs adds `pairs` and `rate` sections)."""
    settings = _settings(args)
    if name == "idle":
        idle = IdleParams(connections=args.connections, hold=args.hold)
        idle.workers = args.workers or idle.workers
        results.setdefault("idle", []).append(await run_idle(idle, settings))
    elif name in ("pairs", "backends", "cross"):
        if name == "pairs":
            phases = await run_pairs(_pairs_params(args, [MAX]), settings)
        elif name == "backends":
            pairs = _pairs_params(args, DEFAULT_RATES)
            phases = await run_backends(pairs, settings, args.server_workers or 2)
        else:
            phases = await run_cross(_pairs_params(args, CROSS_RATES), settings)
        for phase in phases:
            results.setdefault(phase.get("section") or section(phase), []).append(phase)
    elif name == "e2e":
        e2e = E2eParams(pairs=args.pairs, messages=args.messages or 50)
        results.setdefault("e2e", []).append(await run_e2e(e2e, settings))
    elif name == "group-fanout":
        for phase in await run_groups(_group_params(args), settings):
            results.setdefault(phase["section"], []).append(phase)
    elif name == "media":
        media = MediaParams(reps=args.media_reps)
        media.sizes_mib = args.media_size or media.sizes_mib
        for size in await run_media(media, settings):
            results.setdefault(size["section"], []).append(size)
    elif name == "calls":
        calls = CallsParams(
            setup_calls=args.setup_calls,
            seconds=args.call_seconds,
            tone_seconds=args.call_seconds / 2,
            max_calls=args.max_calls,
            window=args.call_window,
        )
        calls.workers = args.workers or calls.workers
        direct = await run_direct(calls, settings)  # kept if the relayed part fails
        results.setdefault(direct["section"], []).append(direct)
        relayed = await run_relayed(calls, settings)
        results.setdefault(relayed["section"], []).append(relayed)


async def run(args: argparse.Namespace) -> tuple[dict[str, list[Args]], list[str]]:
    """Run the chosen scenarios `--repeat` times; results by section, and failures."""
    results: dict[str, list[Args]] = {}
    failures: list[str] = []
    for _ in range(args.repeat):
        for name in args.scenarios or DEFAULT_SUITE:
            t0 = time.monotonic()
            print(f"bench: running {name} ...", flush=True)
            try:
                await run_one(name, args, results)
            except Exception as exc:  # reported; the other scenarios still run
                failures.append(f"{name}: {exc}")
                print(f"bench: {name} FAILED: {exc}", flush=True)
                continue
            print(f"bench: {name} done in {time.monotonic() - t0:.0f} s", flush=True)
    return results, failures


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make bench`."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    raise_file_limit()
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results, failures = runner.run(run(args))
    source = report.source_version(ROOT)
    if args.server_src is not None:
        source = f"server from {args.server_src} (bench at {source})"
    path = report.write_json(args.out, sys.argv[1:] if argv is None else argv, results, source)
    print()
    print(report.table(report.checks(results)))
    print(f"\nbench: results written to {path}")
    for failure in failures:
        print(f"bench: FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
