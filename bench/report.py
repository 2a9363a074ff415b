"""The summary table, the targets, and the JSON results file."""

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import cpu_count
from bench.stats import median
from bench.workers import Args

# (scenario, metric path, label, unit, target as (operator, value) or None)
ROWS: list[tuple[str, str, str, str, tuple[str, float] | None]] = [
    ("idle", "established", "connections held", "", None),
    ("idle", "connect_per_s", "connect rate (hello+auth)", "conn/s", None),
    ("idle", "rss_per_connection_kib", "server RSS per connection", "KiB", ("<=", 20.0)),
    ("idle", "server_cpu_per_1000_connects_s", "server CPU per 1,000 connects", "s", None),
    ("idle", "idle_server_cpu_pct", "server CPU while idle", "%", None),
    ("idle", "ping_rtt_ms.p99", "ping p99 with all open", "ms", None),
    ("pairs", "delivered_per_s", "delivered msgs/s (durable)", "msg/s", (">=", 10_000.0)),
    ("pairs", "latency_ms.p50", "send->receipt p50", "ms", None),
    ("pairs", "latency_ms.p99", "send->receipt p99", "ms", None),
    ("pairs", "latency_ms.max", "send->receipt max", "ms", None),
    ("pairs", "commit_latency_ms.p99", "send->sent p99", "ms", None),
    ("pairs", "server_cpu_per_1000_msgs_s", "server CPU per 1,000 msgs", "s", None),
    ("pairs", "server_cpu_cores", "server CPU", "cores", None),
    ("pairs", "server_rss_mib", "server RSS", "MiB", None),
    ("pairs", "loadgen_cpu_cores", "load generators' CPU", "cores", None),
    ("rate", "delivered_per_s", "delivered msgs/s", "msg/s", None),
    ("rate", "latency_ms.p50", "send->receipt p50", "ms", None),
    ("rate", "latency_ms.p99", "send->receipt p99", "ms", ("<=", 20.0)),
    ("rate", "latency_ms.max", "send->receipt max", "ms", None),
    ("rate", "pacer_lag_ms.p99", "generator lateness p99", "ms", None),
    ("rate", "server_cpu_cores", "server CPU", "cores", None),
    ("rate", "server_cpu_per_1000_msgs_s", "server CPU per 1,000 msgs", "s", None),
    ("rate", "loadgen_cpu_cores", "load generators' CPU", "cores", None),
    ("pg-pairs", "delivered_per_s", "delivered msgs/s (durable)", "msg/s", (">=", 10_000.0)),
    ("pg-pairs", "latency_ms.p50", "send->receipt p50", "ms", None),
    ("pg-pairs", "latency_ms.p99", "send->receipt p99", "ms", None),
    ("pg-pairs", "server_cpu_per_1000_msgs_s", "server CPU per 1,000 msgs", "s", None),
    ("pg-pairs", "postgres_cpu_per_1000_msgs_s", "PostgreSQL CPU per 1,000 msgs", "s", None),
    ("pg-pairs", "redis_cpu_per_1000_msgs_s", "Redis CPU per 1,000 msgs", "s", None),
    ("pg-pairs", "total_cpu_per_1000_msgs_s", "all CPU per 1,000 msgs", "s", None),
    ("pg-pairs", "server_cpu_cores", "server CPU (all workers)", "cores", None),
    ("pg-pairs", "postgres_cpu_cores", "PostgreSQL CPU", "cores", None),
    ("pg-pairs", "redis_cpu_cores", "Redis CPU", "cores", None),
    ("pg-pairs", "loadgen_cpu_cores", "load generators' CPU", "cores", None),
    ("pg-pairs", "messages_per_commit", "messages per commit", "", None),
    ("pg-rate", "delivered_per_s", "delivered msgs/s", "msg/s", None),
    ("pg-rate", "latency_ms.p50", "send->receipt p50", "ms", None),
    ("pg-rate", "latency_ms.p99", "send->receipt p99", "ms", None),
    ("pg-rate", "latency_ms.max", "send->receipt max", "ms", None),
    ("pg-rate", "pacer_lag_ms.p99", "generator lateness p99", "ms", None),
    ("pg-rate", "total_cpu_per_1000_msgs_s", "all CPU per 1,000 msgs", "s", None),
    ("pg/sqlite", "delivered_per_s", "delivered msgs/s", "ratio", None),
    ("pg/sqlite", "server_cpu_per_1000_msgs_s", "server CPU per msg", "ratio", None),
    ("pg/sqlite", "total_cpu_per_1000_msgs_s", "all CPU per msg", "ratio", None),
    ("pg/sqlite rate", "latency_ms.p50", "send->receipt p50", "ratio", None),
    ("pg/sqlite rate", "latency_ms.p99", "send->receipt p99", "ratio", None),
    ("pg/sqlite rate", "total_cpu_per_1000_msgs_s", "all CPU per msg", "ratio", None),
    ("cross-node", "delivered_per_s", "delivered msgs/s", "msg/s", None),
    ("cross-node", "latency_ms.p50", "send->receipt p50", "ms", None),
    ("cross-node", "latency_ms.p99", "send->receipt p99", "ms", ("<=", 30.0)),
    ("cross-node", "latency_ms.max", "send->receipt max", "ms", None),
    ("cross-node", "pacer_lag_ms.p99", "generator lateness p99", "ms", None),
    ("cross-node", "server_cpu_cores", "server CPU (both nodes)", "cores", None),
    ("cross-node", "total_cpu_per_1000_msgs_s", "all CPU per 1,000 msgs", "s", None),
    ("same-node", "latency_ms.p50", "send->receipt p50", "ms", None),
    ("same-node", "latency_ms.p99", "send->receipt p99", "ms", None),
    ("same-node", "latency_ms.max", "send->receipt max", "ms", None),
    ("same-node", "total_cpu_per_1000_msgs_s", "all CPU per 1,000 msgs", "s", None),
    ("cross/same", "latency_ms.p50", "send->receipt p50", "ratio", None),
    ("cross/same", "latency_ms.p99", "send->receipt p99", "ratio", None),
    ("cross/same", "total_cpu_per_1000_msgs_s", "all CPU per msg", "ratio", None),
    ("e2e", "delivered_per_s", "delivered msgs/s (SDK, Olm)", "msg/s", None),
    ("e2e", "latency_ms.p50", "send->receipt p50", "ms", None),
    ("e2e", "latency_ms.p99", "send->receipt p99", "ms", None),
    ("e2e", "send_text_ms.p50", "send_text (until `sent`) p50", "ms", None),
    # calls: direct on loopback (host candidates on 127.0.0.1), then relay-only through coturn
    ("calls", "setup_ms.p50", "set-up, dial->connected p50", "ms", ("<=", 300.0)),
    ("calls", "setup_ms.p99", "set-up, dial->connected p99", "ms", None),
    ("calls", "callee_setup_ms.p50", "dial->callee connected p50", "ms", None),
    ("calls", "ring_ms.p50", "dial->callee rings p50", "ms", None),
    ("calls", "first_call_setup_ms", "first call's set-up (imports)", "ms", None),
    ("calls", "speech_bytes_per_minute", "bytes/min, speech, default", "B", None),
    ("calls", "speech_low_bytes_per_minute", "bytes/min, speech, low-data", "B", None),
    ("calls", "speech_low_over_default", "low-data / default bytes", "ratio", ("<=", 0.4)),
    ("calls", "tone_low_over_default", "low-data / default, SDK tone", "ratio", None),
    ("calls", "speech_clients_cpu_pct_per_call", "clients' CPU per call", "%", None),
    ("calls", "speech_low_clients_cpu_pct_per_call", "clients' CPU per low-data call", "%", None),
    ("calls", "tone_clients_cpu_pct_per_call", "clients' CPU per call, SDK tone", "%", None),
    ("calls", "server_cpu_ms_per_setup", "server CPU per call set up", "ms", None),
    ("calls-relay", "setup_ms.p50", "relay-only set-up p50", "ms", None),
    ("calls-relay", "setup_ms.p99", "relay-only set-up p99", "ms", None),
    ("calls-relay", "max_ok_calls", "relayed calls at once, <1% late", "calls", None),
    ("calls-relay", "first_failed_calls", "first level with late frames", "calls", None),
    ("calls-relay", "at_max_late_share", "late frames at that max", "ratio", None),
    ("calls-relay", "at_max_lateness_ms_p99", "frame lateness p99 at that max", "ms", None),
    ("calls-relay", "at_max_clients_cpu_pct_per_call", "clients' CPU per relayed call", "%", None),
    ("calls-relay", "at_max_coturn_cpu_pct_per_call", "coturn CPU per relayed call", "%", None),
    ("calls-relay", "at_max_server_cpu_pct_per_call", "server CPU per relayed call", "%", None),
    ("calls-relay", "at_max_clients_cores", "clients' CPU at that max", "cores", None),
]

# group-fanout on SQLite, and the same with the "pg-" prefix on PostgreSQL + Redis; the
# storage target is SQLite's (PostgreSQL's figure is shown beside it without a verdict)
_GROUP_ROWS: list[tuple[str, str, str, str, tuple[str, float] | None]] = [
    ("group-fanout", "members", "member connections", "", None),
    ("group-fanout", "sent", "group messages sent", "", None),
    ("group-fanout", "incomplete", "messages missing at a member", "", None),
    ("group-fanout", "last_member_ms.p50", "send->last member p50", "ms", None),
    ("group-fanout", "last_member_ms.p99", "send->last member p99", "ms", ("<=", 250.0)),
    ("group-fanout", "last_member_ms.max", "send->last member max", "ms", None),
    ("group-fanout", "first_member_ms.p50", "send->first member p50", "ms", None),
    ("group-fanout", "envelope_ms.p50", "send->each member p50", "ms", None),
    ("group-fanout", "envelope_ms.p99", "send->each member p99", "ms", None),
    ("group-fanout", "commit_latency_ms.p99", "send->sent p99", "ms", None),
    ("group-fanout", "delivered_envelopes_per_s", "delivered envelopes/s", "env/s", None),
    ("group-fanout", "server_cpu_cores", "server CPU", "cores", None),
    ("group-fanout", "server_cpu_per_group_msg_ms", "server CPU per group msg", "ms", None),
    ("group-fanout", "server_rss_mib", "server RSS", "MiB", None),
    ("group-fanout", "loadgen_cpu_cores", "load generators' CPU", "cores", None),
    ("group-fanout", "pacer_lag_ms.p99", "generator lateness p99", "ms", None),
    ("group-storage", "bytes_per_message", "DB growth per group msg", "B", None),
    ("group-storage", "payload_per_message", "record bytes per group msg", "B", None),
    ("group-storage", "target_bytes", "2 x body + 64 x devices", "B", None),
    ("group-storage", "of_target", "DB growth / that", "ratio", ("<=", 1.0)),
    ("group-storage", "bytes_per_device", "DB growth per recipient device", "B", None),
    ("group-storage", "server_cpu_per_group_msg_ms", "server CPU per msg, offline", "ms", None),
    ("group-storage", "drain_seconds", "catch-up of stored msgs, all", "s", None),
    ("group-storage", "drain_envelopes_per_s", "catch-up envelopes/s", "env/s", None),
]
ROWS += _GROUP_ROWS
ROWS += [
    ("pg-" + scenario, path, label, unit, None if scenario == "group-storage" else target)
    for scenario, path, label, unit, target in _GROUP_ROWS
]
ROWS += [
    ("pg-group-fanout", "postgres_cpu_cores", "PostgreSQL CPU", "cores", None),
    ("pg-group-fanout", "redis_cpu_cores", "Redis CPU", "cores", None),
]

# media: one section per file size ("media-1MiB", "pg-media-100MiB"); throughput in
# decimal MB/s of the file; the target is end to end at least half the plain upload's
Target = tuple[str, float] | None  # (operator, value)
MEDIA_ROWS: list[tuple[str, str, str, Target]] = [
    ("reps", "sends (each way)", "", None),
    ("upload_mb_s", "upload: send_file", "MB/s", None),
    ("download_mb_s", "download to checked file", "MB/s", None),
    ("e2e_mb_s", "end to end", "MB/s", None),
    ("plain_upload_mb_s", "plain HTTP PUT, fsynced", "MB/s", None),
    ("plain_download_mb_s", "plain HTTP GET, fsynced", "MB/s", None),
    ("plain_round_trip_mb_s", "plain PUT then GET", "MB/s", None),
    ("e2e_over_plain_upload", "end to end / plain PUT", "ratio", (">=", 0.5)),
    ("e2e_over_plain_round_trip", "end to end / plain PUT then GET", "ratio", None),
    ("upload_over_plain_upload", "upload / plain PUT", "ratio", None),
    ("download_over_plain_download", "download / plain GET", "ratio", None),
    ("sniff_ms", "of send_file: kind sniffing", "ms", None),
    ("server_cpu_ms_per_mb_upload", "server CPU per MB up", "ms", None),
    ("server_cpu_ms_per_mb_download", "server CPU per MB down", "ms", None),
    ("plain_server_cpu_ms_per_mb_upload", "plain server CPU per MB up", "ms", None),
    ("plain_server_cpu_ms_per_mb_download", "plain server CPU per MB down", "ms", None),
    ("client_cpu_ms_per_mb_upload", "SDK CPU per MB up", "ms", None),
    ("client_cpu_ms_per_mb_download", "SDK CPU per MB down", "ms", None),
    ("plain_client_cpu_ms_per_mb_upload", "plain client CPU per MB up", "ms", None),
    ("plain_client_cpu_ms_per_mb_download", "plain client CPU per MB down", "ms", None),
]


def _is_media(section: str) -> bool:
    return section.removeprefix("pg-").startswith("media-")


def rows(results: dict[str, list[Args]]) -> list[tuple[str, str, str, str, Target]]:
    """ROWS, then the media rows of every file size in the results, in their order."""
    media = [s for s in results if _is_media(s)]
    return ROWS + [(s, *row) for s in media for row in MEDIA_ROWS]


def lookup(result: Args, path: str) -> float:
    """A metric by dotted path; NaN if missing."""
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return math.nan
        value = value[part]
    return float(value) if isinstance(value, int | float) else math.nan


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


# The targets hold for these sizes; smaller runs are shown without a verdict.
TARGET_SIZES: dict[str, tuple[tuple[str, float], ...]] = {
    "idle": (("established", 19_000),),
    "pairs": (("clients", 1000),),
    "rate": (("offered_per_s", 2000),),
    "pg-pairs": (("clients", 1000),),
    "cross-node": (("offered_per_s", 2000),),
    "group-fanout": (("members", 1000), ("offered_per_s", 20)),
    "pg-group-fanout": (("members", 1000), ("offered_per_s", 20)),
    "calls": (("setup_calls", 20), ("call_seconds", 20)),
}


def _at_size(scenario: str, result: Args) -> bool:
    return all(lookup(result, m) >= size for m, size in TARGET_SIZES.get(scenario, ()))


def _target_text(target: tuple[str, float] | None, sized: bool) -> str:
    if target is None:
        return ""
    text = f"{target[0]} {_fmt(target[1])}"
    return text if sized else f"({text} at full size)"


def checks(results: dict[str, list[Args]]) -> list[Args]:
    """One row per metric: the median over repeats, each run's value, target, verdict."""
    out = []
    for scenario, path, label, unit, target in rows(results):
        runs = results.get(scenario, [])
        if not runs:
            continue
        values = [lookup(r, path) for r in runs]
        value = median(v for v in values if not math.isnan(v))
        met: bool | None = None
        sized = all(_at_size(scenario, r) for r in runs)
        if target is not None and sized and not math.isnan(value):
            op, limit = target
            met = value >= limit if op == ">=" else value <= limit
        out.append(
            {
                "scenario": scenario,
                "metric": path,
                "label": label,
                "unit": unit,
                "median": value,
                "runs": values,
                "target": _target_text(target, sized),
                "met": met,
            }
        )
    return out


def table(rows: list[Args]) -> str:
    """The summary as a plain-text table."""
    header = ("scenario", "metric", "median", "unit", "runs", "target", "met")
    lines = [header]
    for r in rows:
        verdict = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        runs = " ".join(_fmt(v) for v in r["runs"]) if len(r["runs"]) > 1 else ""
        lines.append(
            (r["scenario"], r["label"], _fmt(r["median"]), r["unit"], runs, r["target"], verdict)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for n, line in enumerate(lines):
        text.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def source_version(root: Path) -> str:
    """The git commit of the measured tree, with `+dirty` if src/ has local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def write_json(out_dir: Path, argv: list[str], results: dict[str, list[Args]], source: str) -> Path:
    """Write every figure of the run to out_dir/bench-<time>.json; returns the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out_dir / f"bench-{stamp}.json"
    doc = {
        "command": "python -m bench.run " + " ".join(argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": source,
        "load_average": os.getloadavg(),
        "machine": {
            "cpus": cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "checks": checks(results),
        "results": results,
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path
