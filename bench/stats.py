"""Percentiles and summaries of latency samples."""

import math
from collections.abc import Iterable


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (0-100, nearest rank) of an already sorted list; NaN if empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: Iterable[float]) -> dict[str, float]:
    """Count, mean, p50, p90, p99, p99.9 and max of samples (in their own unit)."""
    ordered = sorted(values)
    n = len(ordered)
    return {
        "count": float(n),
        "mean": sum(ordered) / n if n else math.nan,
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "p999": percentile(ordered, 99.9),
        "max": ordered[-1] if n else math.nan,
    }


def median(values: Iterable[float]) -> float:
    """The median of a few numbers (of repeated runs); NaN if there are none."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
