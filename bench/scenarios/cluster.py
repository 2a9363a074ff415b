"""The cluster backends: `pairs` on SQLite beside PostgreSQL + Redis, and across two nodes.

`backends` runs `pairs` (each rate) on the embedded SQLite (one process), then on
PostgreSQL + Redis with several server workers, and reports the ratios of the two from
the same run. `cross` starts two nodes on one PostgreSQL and Redis and runs paced
traffic with every sender on the first node and its receiver on the second, then again
with both ends on the first node.
"""

import dataclasses
import math

from bench.harness import Settings
from bench.report import lookup
from bench.scenarios.pairs import PairsParams, run_pairs
from bench.workers import Args

# metrics compared as (other / base) between two phases at the same rate
RATIO_METRICS = (
    "delivered_per_s",
    "latency_ms.p50",
    "latency_ms.p99",
    "server_cpu_per_1000_msgs_s",
    "total_cpu_per_1000_msgs_s",
)


def section(result: Args) -> str:
    """The report section of a pairs phase: its backend, placement and mode."""
    paced = result["mode"] == "paced"
    if result.get("placement") in ("cross", "same"):
        return f"{result['placement']}-node"
    prefix = "pg-" if result.get("backend") == "postgres" else ""
    return prefix + ("rate" if paced else "pairs")


def ratios(other: Args, base: Args) -> Args:
    """other / base for each metric of RATIO_METRICS (NaN where one is missing)."""
    out: Args = {"offered_per_s": other["offered_per_s"], "mode": other["mode"]}
    for metric in RATIO_METRICS:
        a, b = lookup(other, metric), lookup(base, metric)
        *parents, leaf = metric.split(".")
        place = out
        for name in parents:  # nested like the phases, so report.lookup finds it
            place = place.setdefault(name, {})
        place[leaf] = a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan
    return out


async def run_backends(p: PairsParams, settings: Settings, server_workers: int) -> list[Args]:
    """pairs on SQLite, then on PostgreSQL + Redis; the phases of both and their ratios.

    Ratios come as results with mode `ratio-closed-loop` / `ratio-paced`.
    """
    sqlite = await run_pairs(p, dataclasses.replace(settings, backend="sqlite", server_workers=1))
    cluster = dataclasses.replace(settings, backend="postgres", server_workers=server_workers)
    postgres = await run_pairs(p, cluster)
    out = sqlite + postgres
    for pg, base in zip(postgres, sqlite, strict=True):
        ratio = ratios(pg, base)
        ratio["section"] = "pg/sqlite" if pg["mode"] == "closed-loop" else "pg/sqlite rate"
        out.append(ratio)
    return out


async def run_cross(p: PairsParams, settings: Settings) -> list[Args]:
    """Paced traffic across two nodes, then on one; the phases and their ratios."""
    params = dataclasses.replace(p, nodes=2, placements=["cross", "same"])
    results = await run_pairs(params, dataclasses.replace(settings, backend="postgres"))
    half = len(results) // 2
    out = list(results)
    for cross, same in zip(results[:half], results[half:], strict=True):
        ratio = ratios(cross, same)
        ratio["section"] = "cross/same"
        out.append(ratio)
    return out
