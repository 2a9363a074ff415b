"""Scenario `calls`: voice calls between real SDK clients, direct on loopback and through coturn.

Two parts, each on its own `plauder serve`:

- *direct* (section `calls`): a server without a TURN relay, two SDK clients
  in two generator processes whose ICE offers host candidates on 127.0.0.1
  only (aioice is patched in the generators, as the tests' fixture does; the
  product never is). A first call (aiortc imported, the Olm session made), then
  `setup_calls` calls one after the other: set-up time from `client.call(...)`
  to the caller seeing `connected`, and to the callee's `accept` returning.
  Then calls of fixed length with a speech-like source (bench/call_sound.py),
  in default and in low-data mode, and the same with the SDK's `Tone`: bytes
  per minute from the caller's call log, the generators' and the server's CPU
  while the call runs.
- *relayed* (section `calls-relay`): a throwaway coturn on 127.0.0.1
  (tests/services.py) and a server handing out its credentials; every call is
  relay-only, caller and callee in different generator processes. A few calls
  one after the other for the relayed set-up time, then a ramp: 1, 2, 3, 4,
  6, 8, 12, ... calls at once (new calls join those still running), each
  level held for `window` seconds while every receiving side times its
  frames; a level passes when all its calls connected and stayed up, every
  end got nearly all its sound, and fewer than `late_share` of the frames
  arrived late (bench/call_sound.py: TimingSink). The ramp stops at the first
  level that does not pass, at `max_calls`, or after `budget` seconds.
  coturn's, the server's and the generators' CPU at every level.

docs/performance.md ("Calls") has the definitions and the figures.
"""

import asyncio
import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped]

from bench.accounts import fetch_code, number
from bench.call_sound import LATE_MS, SpeechLike, TimingSink
from bench.harness import Env, Settings, environment, generators
from bench.loadgen import run_bounded
from bench.server import Snapshot
from bench.stats import summarize
from bench.workers import Args, Commands, Pool
from plauder.client import Call, CallLogEntry, CallState, Client
from plauder.client.call_audio import RATE, AudioSource, Tone
from tests.services import Coturn

SOURCES = ("speech", "tone")
STARVED = 0.05  # an end that got less of the window's sound than 1 - this is starved


@dataclass
class CallsParams:
    """Sizes of the calls scenario."""

    setup_calls: int = 20  # sequential direct calls timed (after a first one)
    relayed_setup_calls: int = 10  # sequential relay-only calls timed (after a first one)
    seconds: float = 20.0  # length of each speech-like call for bytes per minute
    tone_seconds: float = 10.0  # the same with the SDK's Tone, for reference
    max_calls: int = 64  # the ramp's last level
    window: float = 10.0  # seconds each ramp level is measured
    settle: float = 2.0  # seconds after connecting before measuring
    late_share: float = 0.01  # a level passes below this share of late frames
    workers: int = 4  # generator processes of the relayed part
    budget: float = 300.0  # seconds the ramp may take
    call_timeout: float = 30.0  # one call's set-up

    def levels(self) -> list[int]:
        """1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and halfway) up to max_calls."""
        steps = sorted({1 << k for k in range(12)} | {3 << k for k in range(11)})
        return [n for n in steps if n < self.max_calls] + [self.max_calls]


@dataclass
class Leg:
    """One end of a call in this generator, with the sink that times what it hears."""

    call: Call | None
    sink: TimingSink
    dialled_ns: int = 0  # caller: when client.call was called
    ring_ns: int = 0  # callee: when the call rang here
    connected_ns: int = 0  # when this side saw it connected
    error: str = ""
    base: tuple[int, int] = (0, 0)  # packets received and lost at the window's start

    def row(self) -> Args:
        """What the bench keeps of a set-up."""
        call = self.call
        return {
            "call": call.id if call is not None else "",
            "state": call.state.value if call is not None else "failed",
            "reason": call.reason if call is not None else "",
            "dialled_ns": self.dialled_ns,
            "ring_ns": self.ring_ns,
            "connected_ns": self.connected_ns,
            "error": self.error,
        }


def _loopback_only() -> None:
    """ICE host candidates on 127.0.0.1 only (in a generator process; aioice never offers it)."""
    import aioice.ice

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    aioice.ice.get_host_addresses = loopback


class CallWorker(Commands):
    """SDK clients that place calls and answer every call that rings (with the same source)."""

    def __init__(self, spec: Args) -> None:
        self.spec = spec
        self.clients: dict[int, Client] = {}
        self.outgoing: dict[str, Leg] = {}
        self.incoming: dict[str, Leg] = {}
        self.window: list[Leg] = []
        self.marked = 0.0  # when the window started
        self.relay_only: bool = spec["relay_only"]
        self.source = "speech"
        self.drains: list[asyncio.Task[None]] = []
        if spec["loopback"]:
            _loopback_only()
        SpeechLike()  # made once per process, before anything is timed

    def _source(self) -> AudioSource:
        if self.source == "tone":
            return Tone(440)
        return SpeechLike(offset_seconds=len(self.outgoing) + len(self.incoming))

    async def cmd_register(
        self, server_url: str, profiles: str, indices: list[int], timeout: float
    ) -> Args:
        """Register and start SDK clients for these accounts; they answer every call."""
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> None:
                if i in self.clients:
                    return
                client = Client(Path(profiles) / str(i), number(i))
                await client.request_code([server_url])
                await client.verify(await fetch_code(session, self.spec["collector"], number(i)))
                await client.start()
                client.on_incoming_call(self._ring)
                self.clients[i] = client
                self.drains.append(asyncio.ensure_future(_drain(client)))

            done, errors = await run_bounded(indices, one, 4, timeout)
        if errors:
            raise RuntimeError(f"SDK registration failed: {errors[:3]}")
        return {"done": done}

    async def cmd_configure(self, source: str) -> Args:
        """The sound both ends of the next calls send: speech (looped) or the SDK's tone."""
        self.source = source
        return {}

    async def _ring(self, call: Call) -> None:
        leg = Leg(call, TimingSink(), ring_ns=time.monotonic_ns())
        self.incoming[call.id] = leg
        try:
            await call.accept(self._source(), leg.sink, relay_only=self.relay_only)
            leg.connected_ns = time.monotonic_ns()
        except Exception as exc:  # the bench counts it; the call's own state says more
            leg.error = repr(exc)

    async def _dial(self, caller: int, callee: int, low_data: bool, timeout: float) -> Leg:
        leg = Leg(None, TimingSink(), dialled_ns=time.monotonic_ns())
        try:
            async with asyncio.timeout(timeout):
                leg.call = await self.clients[caller].call(
                    number(callee),
                    self._source(),
                    leg.sink,
                    low_data=low_data,
                    relay_only=self.relay_only,
                )
                self.outgoing[leg.call.id] = leg
                if await leg.call.wait_state(CallState.CONNECTED) is CallState.CONNECTED:
                    leg.connected_ns = time.monotonic_ns()
        except Exception as exc:
            leg.error = repr(exc)
        return leg

    async def cmd_dial(
        self, pairs: list[list[int]], low_data: bool, concurrency: int, timeout: float
    ) -> Args:
        """Call from each pair's first account to its second (those whose caller is here)."""
        rows: list[Args] = []
        mine = [pair for pair in pairs if pair[0] in self.clients]

        async def one(pair: list[int]) -> None:
            rows.append((await self._dial(pair[0], pair[1], low_data, timeout)).row())

        await run_bounded(mine, one, concurrency, timeout + 10)
        return {"rows": rows}

    async def cmd_series(
        self, caller: int, callee: int, calls: int, hold: float, pause: float, budget: float
    ) -> Args:
        """`calls` calls one after the other: connected, held `hold` s, hung up; set-up rows.

        Only the generator holding the caller does anything.
        """
        rows: list[Args] = []
        if caller not in self.clients:
            return {"rows": rows}
        deadline = time.monotonic() + budget
        for _ in range(calls):
            if time.monotonic() > deadline:
                break
            leg = await self._dial(caller, callee, False, 15.0)
            if leg.connected_ns:
                await asyncio.sleep(hold)
            if leg.call is not None:
                await leg.call.hangup()
                await leg.call.wait_ended(10.0)
                self.outgoing.pop(leg.call.id, None)
            rows.append(leg.row())
            await asyncio.sleep(pause)
        return {"rows": rows}

    async def cmd_answers(self, calls: list[str]) -> Args:
        """The callee's side of these calls, if they rang here."""
        return {"rows": [self.incoming[c].row() for c in calls if c in self.incoming]}

    def _live(self) -> list[Leg]:
        legs = [*self.outgoing.values(), *self.incoming.values()]
        return [
            leg for leg in legs if leg.call is not None and leg.call.state is CallState.CONNECTED
        ]

    async def cmd_mark(self) -> Args:
        """Start a measuring window on every connected call here."""
        self.window = self._live()
        for leg in self.window:
            leg.sink.mark()
        self.marked = time.monotonic()
        for leg in self.window:
            assert leg.call is not None
            stats = await leg.call.refresh_stats()
            leg.base = (stats.packets_received, stats.packets_lost)
        return {"legs": len(self.window)}

    async def cmd_report(self) -> Args:
        """What every end in the window heard: frame timings, late frames, losses."""
        lateness: list[float] = []
        gaps: list[float] = []
        frames = late = samples = dropped = received = lost = starved = 0
        due = (time.monotonic() - self.marked) * RATE
        for leg in self.window:
            assert leg.call is not None
            if leg.call.state is not CallState.CONNECTED:
                dropped += 1
                continue
            stats = await leg.call.refresh_stats()
            received += stats.packets_received - leg.base[0]
            lost += stats.packets_lost - leg.base[1]
            sink = leg.sink
            lateness += [round(x, 2) for x in sink.lateness_ms]
            gaps += [round(x, 2) for x in sink.gaps_ms]
            frames += len(sink.lateness_ms)
            late += sink.late
            samples += sink.window_samples
            starved += sink.window_samples < (1 - STARVED) * due
        return {
            "legs": len(self.window),
            "dropped": dropped,
            "starved": starved,
            "frames": frames,
            "late": late,
            "samples": samples,
            "due_samples": due * len(self.window),
            "lateness_ms": lateness,
            "gaps_ms": gaps,
            "packets_received": received,
            "packets_lost": lost,
        }

    async def cmd_hangup(self, timeout: float) -> Args:
        """Hang up every call placed here, wait for those that rang here to end; the log."""
        legs = [leg for leg in self.outgoing.values() if leg.call is not None]
        entries: list[Args] = []

        async def one(leg: Leg) -> None:
            call = leg.call
            assert call is not None
            await call.hangup()
            await call.wait_ended(timeout)
            entries.append(_usage(self._log_entry(call), call))

        await run_bounded(legs, one, 8, timeout + 5)
        self.outgoing.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for leg in list(self.incoming.values()):
                    if leg.call is not None:
                        await leg.call.wait_ended()
        open_calls = sum(1 for c in self.clients.values() if c.calls.active is not None)
        self.incoming.clear()
        return {"entries": entries, "still_open": open_calls}

    def _log_entry(self, call: Call) -> CallLogEntry | None:
        for client in self.clients.values():
            for entry in client.calls.log(limit=5, peer=call.peer):
                if entry.id == call.id:
                    return entry
        return None

    async def close(self) -> None:
        """Stop draining events, close every client (hanging up what still runs)."""
        for task in self.drains:
            task.cancel()
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await client.close()


async def _drain(client: Client) -> None:
    """Take the client's events as an application would (they would pile up otherwise)."""
    while True:
        await client.next_event()


def _usage(entry: CallLogEntry | None, call: Call) -> Args:
    """A finished call's bytes (from the call log) and its final figures."""
    stats = call.stats
    return {
        "call": call.id,
        "state": call.state.value,
        "low_data": call.low_data,
        "seconds": entry.duration if entry is not None else 0.0,
        "bytes_sent": entry.bytes_sent if entry is not None else 0,
        "bytes_received": entry.bytes_received if entry is not None else 0,
        "bytes_per_minute": entry.bytes_per_minute if entry is not None else 0.0,
        "relayed": entry.relayed if entry is not None else stats.relayed,
        "opus_bitrate": stats.opus_bitrate,
        "send_bitrate": stats.send_bitrate,
        "receive_bitrate": stats.receive_bitrate,
        "packets_sent": stats.packets_sent,
        "packets_received": stats.packets_received,
        "packets_lost": stats.packets_lost,
        "round_trip_ms": None if stats.round_trip_time is None else stats.round_trip_time * 1000,
    }


class Meter:
    """CPU of the generators, the server and (if any) coturn between two moments."""

    def __init__(self, pool: Pool, env: Env, coturn: Coturn | None = None) -> None:
        self.parts: dict[str, list[psutil.Process]] = {
            "clients": [psutil.Process(pid) for pid in pool.pids],
            "server": [psutil.Process(pid) for pid in env.server.pids],
        }
        if coturn is not None and coturn.proc is not None:
            self.parts["coturn"] = [psutil.Process(coturn.proc.pid)]

    def snap(self) -> dict[str, Snapshot]:
        """Each part's CPU now."""
        return {
            name: Snapshot.total([Snapshot.of_tree(proc) for proc in procs])
            for name, procs in self.parts.items()
        }

    @staticmethod
    def cores(before: dict[str, Snapshot], after: dict[str, Snapshot]) -> dict[str, float]:
        """Each part's CPU between two snaps, in cores (1.0: one core all the time)."""
        out = {}
        for name, end in after.items():
            wall = end.t - before[name].t
            out[name] = end.cpu_since(before[name]) / wall if wall > 0 else 0.0
        return out

    @staticmethod
    def seconds(before: dict[str, Snapshot], after: dict[str, Snapshot]) -> dict[str, float]:
        """Each part's CPU seconds between two snaps."""
        return {name: end.cpu_since(before[name]) for name, end in after.items()}


def _pair(k: int) -> list[int]:
    """Accounts of pair k: 2k calls 2k+1."""
    return [2 * k, 2 * k + 1]


def _placement(k: int, workers: int) -> tuple[int, int]:
    """Generators of pair k's caller and callee: next to each other, round robin."""
    return k % workers, (k + 1) % workers


async def _register(pool: Pool, env: Env, pairs: range) -> None:
    """Register the accounts of these pairs in their generators."""
    per: list[list[int]] = [[] for _ in range(len(pool))]
    for k in pairs:
        caller, callee = _placement(k, len(pool))
        per[caller].append(_pair(k)[0])
        per[callee].append(_pair(k)[1])
    profiles = str(env.tmp / "profiles")
    args = [
        {"server_url": env.server.url, "profiles": profiles, "indices": ids, "timeout": 120.0}
        for ids in per
    ]
    await pool.call("register", args, 150)


async def _series(pool: Pool, calls: int) -> list[Args]:
    """Pair 0 calls `calls` times, one after the other; set-up times of both sides."""
    caller, callee = _pair(0)
    budget = 10.0 + calls * 5.0
    args = {
        "caller": caller,
        "callee": callee,
        "calls": calls,
        "hold": 0.3,
        "pause": 0.2,
        "budget": budget,
    }
    rows = [r for res in await pool.call("series", args, budget + 60) for r in res["rows"]]
    answers = await pool.call("answers", {"calls": [r["call"] for r in rows]}, 30)
    by_id = {a["call"]: a for res in answers for a in res["rows"]}
    out = []
    for row in rows:
        answer = by_id.get(row["call"], {})
        t0 = row["dialled_ns"]
        out.append(
            {
                "call": row["call"],
                "state": row["state"],
                "reason": row["reason"],
                "error": row["error"] or answer.get("error", ""),
                "setup_ms": (row["connected_ns"] - t0) / 1e6 if row["connected_ns"] else None,
                "callee_setup_ms": (answer["connected_ns"] - t0) / 1e6
                if answer.get("connected_ns")
                else None,
                "ring_ms": (answer["ring_ns"] - t0) / 1e6 if answer.get("ring_ns") else None,
            }
        )
    return out


def _timed(rows: list[Args], key: str) -> dict[str, float]:
    return summarize(r[key] for r in rows if r[key] is not None)


def _setups(first: list[Args], series: list[Args]) -> Args:
    """The figures of a set-up series (and of the first call, timed apart)."""
    connected = [r for r in series if r["setup_ms"] is not None]
    return {
        "setup_calls": len(connected),
        "setup_failures": len(series) - len(connected),
        "first_call_setup_ms": first[0]["setup_ms"] if first else None,
        "setup_ms": _timed(series, "setup_ms"),
        "callee_setup_ms": _timed(series, "callee_setup_ms"),
        "ring_ms": _timed(series, "ring_ms"),
        "errors": [r["error"] for r in series if r["error"]][:5],
        "series": series,
    }


async def _dial(pool: Pool, pairs: list[int], low_data: bool, p: CallsParams) -> list[Args]:
    """Call within these pairs at once; the set-up rows (raises if the pool fails)."""
    args = {
        "pairs": [_pair(k) for k in pairs],
        "low_data": low_data,
        "concurrency": 4,
        "timeout": p.call_timeout,
    }
    results = await pool.call("dial", args, p.call_timeout + 60)
    return [r for res in results for r in res["rows"]]


async def _window(pool: Pool, meter: Meter, seconds: float) -> tuple[Args, dict[str, float]]:
    """Measure what every connected end hears for `seconds`, and the CPU meanwhile."""
    await pool.call("mark", {}, 30)
    before = meter.snap()
    await asyncio.sleep(seconds)
    after = meter.snap()
    reports = await pool.call("report", {}, 60)
    return _heard(reports), Meter.cores(before, after)


def _heard(reports: list[Args]) -> Args:
    """The frame timings of all ends together."""
    lateness = [x for r in reports for x in r["lateness_ms"]]
    gaps = [x for r in reports for x in r["gaps_ms"]]
    frames = sum(r["frames"] for r in reports)
    late = sum(r["late"] for r in reports)
    legs = sum(r["legs"] for r in reports)
    samples = sum(r["samples"] for r in reports)
    due = sum(r["due_samples"] for r in reports)
    return {
        "ends": legs,
        "dropped": sum(r["dropped"] for r in reports),
        "starved": sum(r["starved"] for r in reports),
        "frames": frames,
        "late_frames": late,
        "late_share": late / frames if frames else 1.0,
        "sound_share": samples / due if due else 0.0,
        "lateness_ms": summarize(lateness),
        "gap_ms": summarize(gaps),
        "packets_received": sum(r["packets_received"] for r in reports),
        "packets_lost": sum(r["packets_lost"] for r in reports),
    }


async def _talk(
    pool: Pool, meter: Meter, low_data: bool, source: str, seconds: float, p: CallsParams
) -> Args:
    """One call of about `seconds` (pair 0): bytes per minute from the log, CPU meanwhile."""
    await pool.call("configure", {"source": source}, 10)
    rows = await _dial(pool, [0], low_data, p)
    failed = [r for r in rows if not r["connected_ns"]]
    if failed:
        raise RuntimeError(f"a {source} call did not connect: {failed[0]}")
    await asyncio.sleep(p.settle)
    heard, cores = await _window(pool, meter, max(1.0, seconds - p.settle))
    hung = await pool.call("hangup", {"timeout": 15.0}, 60)
    entries = [e for res in hung for e in res["entries"]]
    if len(entries) != 1:
        raise RuntimeError(f"the {source} call did not end cleanly: {entries}")
    usage = entries[0]
    return {
        "source": source,
        **usage,
        "kbit_s": usage["bytes_per_minute"] * 8 / 60 / 1000,
        "setup_ms": (rows[0]["connected_ns"] - rows[0]["dialled_ns"]) / 1e6,
        "clients_cpu_pct": cores["clients"] * 100,
        "server_cpu_pct": cores["server"] * 100,
        "heard": heard,
    }


async def run_direct(p: CallsParams, settings: Settings) -> Args:
    """Calls on loopback without a relay: set-up times, bytes per minute, CPU per call."""
    async with environment(settings) as env:
        specs = [env.spec([i], loopback=True, relay_only=False) for i in _pair(0)]
        with generators(env, CallWorker, specs) as pool:
            await _register(pool, env, range(1))
            meter = Meter(pool, env)
            first = await _series(pool, 1)
            before = meter.snap()
            series = await _series(pool, p.setup_calls)
            spent = Meter.seconds(before, meter.snap())
            talks: dict[str, Args] = {}
            for source, seconds in (("speech", p.seconds), ("tone", p.tone_seconds)):
                if seconds <= 0:
                    continue
                for low_data in (False, True):
                    name = f"{source}_{'low' if low_data else 'default'}"
                    talks[name] = await _talk(pool, meter, low_data, source, seconds, p)
    return {"backend": settings.backend, **_direct_summary(p, first, series, spent, talks)}


def _direct_summary(
    p: CallsParams, first: list[Args], series: list[Args], spent: dict[str, float], talks: Args
) -> Args:
    out: Args = {
        "section": "calls",
        **_setups(first, series),
        "call_seconds": p.seconds,
        "server_cpu_ms_per_setup": spent["server"] * 1000 / max(1, len(series)),
        "clients_cpu_ms_per_short_call": spent["clients"] * 1000 / max(1, len(series)),
        "talks": talks,
    }
    for source in SOURCES:
        default, low = talks.get(f"{source}_default"), talks.get(f"{source}_low")
        if default is None or low is None:
            continue
        out[f"{source}_bytes_per_minute"] = default["bytes_per_minute"]
        out[f"{source}_low_bytes_per_minute"] = low["bytes_per_minute"]
        out[f"{source}_kbit_s"] = default["kbit_s"]
        out[f"{source}_low_kbit_s"] = low["kbit_s"]
        ratio = low["bytes_per_minute"] / default["bytes_per_minute"]
        out[f"{source}_low_over_default"] = ratio if default["bytes_per_minute"] else None
        out[f"{source}_clients_cpu_pct_per_call"] = default["clients_cpu_pct"]
        out[f"{source}_low_clients_cpu_pct_per_call"] = low["clients_cpu_pct"]
        out[f"{source}_server_cpu_pct_per_call"] = default["server_cpu_pct"]
        out[f"{source}_late_share"] = default["heard"]["late_share"]
    return out


async def run_relayed(p: CallsParams, settings: Settings) -> Args:
    """Relay-only calls through coturn: set-up times, then the ramp of concurrent calls."""
    coturn = Coturn(relay_ports=4 * (p.max_calls + p.relayed_setup_calls) + 100)
    coturn.start()
    try:
        options = {
            **settings.server_options,
            **coturn.server_options(),
            "turn_requests_per_minute": "100000",
        }
        settings = dataclasses.replace(settings, server_options=options)
        async with environment(settings) as env:
            workers = max(2, p.workers)
            specs = [env.spec([], loopback=False, relay_only=True) for _ in range(workers)]
            with generators(env, CallWorker, specs) as pool:

                def watch() -> None:
                    env.check()
                    if coturn.proc is None or coturn.proc.poll() is not None:
                        raise RuntimeError(f"coturn died:\n{coturn.log_text()[-2000:]}")

                pool.watch = watch
                meter = Meter(pool, env, coturn)
                await _register(pool, env, range(1))
                first = await _series(pool, 1)
                series = await _series(pool, p.relayed_setup_calls)
                levels, stop = await _ramp(pool, env, meter, p)
                allocations = len(coturn.allocations())
    finally:
        coturn.stop()
    summary = _relayed_summary(p, first, series, levels, stop, allocations)
    return {"backend": settings.backend, **summary}


async def _ramp(pool: Pool, env: Env, meter: Meter, p: CallsParams) -> tuple[list[Args], str]:
    """1, 2, 3, 4, 6, ... relay-only calls at once, until one level does not pass."""
    deadline = time.monotonic() + p.budget
    levels: list[Args] = []
    active = 0
    registered = 1  # pair 0 made the set-up series
    stop = "cap"
    try:
        for level in p.levels():
            if deadline - time.monotonic() < p.settle + p.window + 15:
                stop = "time"
                break
            await _register(pool, env, range(registered, level))
            registered = max(registered, level)
            t0 = time.monotonic()
            rows = await _dial(pool, list(range(active, level)), False, p)
            dial_s = time.monotonic() - t0
            active = level
            await asyncio.sleep(p.settle)
            heard, cores = await _window(pool, meter, p.window)
            result = _level(level, rows, dial_s, heard, cores, p)
            levels.append(result)
            print(
                f"bench: calls: {level} relayed calls: {heard['late_share']:.2%} late, "
                f"lateness p99 {heard['lateness_ms']['p99']:.0f} ms, clients "
                f"{cores['clients']:.2f} / coturn {cores['coturn']:.3f} cores"
                + ("" if result["passed"] else f" - stop: {result['why']}"),
                flush=True,
            )
            if not result["passed"]:
                stop = result["why"]
                break
    finally:
        await pool.call("hangup", {"timeout": 20.0}, 90)
    return levels, stop


def _level(
    level: int,
    rows: list[Args],
    dial_s: float,
    heard: Args,
    cores: dict[str, float],
    p: CallsParams,
) -> Args:
    failed = [r for r in rows if not r["connected_ns"]]
    setup = [(r["connected_ns"] - r["dialled_ns"]) / 1e6 for r in rows if r["connected_ns"]]
    why = ""
    if failed:
        why = f"{len(failed)} of {len(rows)} new calls did not connect"
    elif heard["ends"] < 2 * level or heard["dropped"]:
        why = f"{heard['dropped']} ends dropped, {heard['ends']} of {2 * level} measured"
    elif heard["starved"]:
        why = f"{heard['starved']} ends got less than {1 - STARVED:.0%} of the sound"
    elif heard["late_share"] >= p.late_share:
        why = f"{heard['late_share']:.1%} of frames late (over {LATE_MS:g} ms)"
    return {
        "calls": level,
        "new_calls": len(rows),
        "dial_seconds": dial_s,
        "setup_ms": summarize(setup),
        "failed": len(failed),
        "errors": [r["error"] for r in failed][:3],
        "passed": not why,
        "why": why,
        **heard,
        "clients_cores": cores["clients"],
        "server_cores": cores["server"],
        "coturn_cores": cores["coturn"],
        "clients_cpu_pct_per_call": cores["clients"] * 100 / level,
        "coturn_cpu_pct_per_call": cores["coturn"] * 100 / level,
        "server_cpu_pct_per_call": cores["server"] * 100 / level,
        "load_average": os.getloadavg()[0],
    }


def _relayed_summary(
    p: CallsParams,
    first: list[Args],
    series: list[Args],
    levels: list[Args],
    stop: str,
    allocations: int,
) -> Args:
    passed = [lv for lv in levels if lv["passed"]]
    best = passed[-1] if passed else None
    failed = next((lv for lv in levels if not lv["passed"]), None)
    out: Args = {
        "section": "calls-relay",
        **_setups(first, series),
        "max_calls_tried": p.max_calls,
        "window_seconds": p.window,
        "late_ms": LATE_MS,
        "late_share_limit": p.late_share,
        "max_ok_calls": best["calls"] if best else 0,
        "first_failed_calls": failed["calls"] if failed else None,
        "stop": stop,
        "turn_allocations": allocations,
        "levels": levels,
    }
    if best is not None:
        for key in (
            "late_share",
            "clients_cores",
            "coturn_cores",
            "server_cores",
            "clients_cpu_pct_per_call",
            "coturn_cpu_pct_per_call",
            "server_cpu_pct_per_call",
        ):
            out[f"at_max_{key}"] = best[key]
        out["at_max_lateness_ms_p99"] = best["lateness_ms"]["p99"]
    if failed is not None:
        out["at_failed_late_share"] = failed["late_share"]
        out["at_failed_clients_cores"] = failed["clients_cores"]
        out["at_failed_coturn_cores"] = failed["coturn_cores"]
    return out
