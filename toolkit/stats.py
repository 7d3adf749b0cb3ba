"""Percentiles and summaries of measured values, for `make bench` and `make load`.

Nearest-rank percentiles: every figure reported is a value that was really
observed (a latency some request took), never an interpolation between two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank p-th percentile (0 < p <= 100) of at least one value."""
    if not values:
        raise ValueError("no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    return ordered[math.ceil(p / 100 * len(ordered)) - 1]


def summary(values: Sequence[float], ndigits: int | None = None) -> dict[str, float | None]:
    """count, min, p50 (the median), p95, p99 and max; None for each figure of no values.

    `ndigits` rounds the figures (not the count) for reports.
    """
    if not values:
        return {"count": 0, "min": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    ordered = sorted(values)
    figures = {"min": ordered[0], **{f"p{p}": percentile(ordered, p) for p in PERCENTILES}, "max": ordered[-1]}
    if ndigits is not None:
        figures = {k: round(v, ndigits) for k, v in figures.items()}
    return {"count": len(ordered), **figures}
