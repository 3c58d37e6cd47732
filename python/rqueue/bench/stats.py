"""Small statistics for bench figures: percentiles of samples, median and spread of repetitions."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of already sorted samples, nearest rank; NaN when empty."""
    if not sorted_samples:
        return math.nan
    rank = math.ceil(p / 100 * len(sorted_samples))
    return float(sorted_samples[min(len(sorted_samples), max(rank, 1)) - 1])


def latency_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds of per-call durations in seconds."""
    ordered = sorted(samples_s)
    if not ordered:
        return {}
    return {
        "p50_ms": percentile(ordered, 50) * 1000,
        "p95_ms": percentile(ordered, 95) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def median_spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and the spread ``(max - min) / median`` of repeated measurements."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "spread": math.nan, "n": 0}
    med = statistics.median(clean)
    return {
        "median": med,
        "min": min(clean),
        "max": max(clean),
        "spread": (max(clean) - min(clean)) / med if med else math.nan,
        "n": len(clean),
    }
