"""toolkit/stats.py: the percentiles `make bench` and `make load` report."""

from __future__ import annotations

import pytest

from toolkit.stats import percentile, summary


def test_a_percentile_is_a_value_that_was_observed() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert [percentile(values, p) for p in (1, 50, 95, 99, 100)] == [1.0, 50.0, 95.0, 99.0, 100.0]
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([10.0, 20.0], 50) == 10.0  # nearest rank, not 15.0
    assert percentile([7.5], 99) == 7.5


@pytest.mark.parametrize("values, p", [([], 50), ([1.0], 0), ([1.0], 101)])
def test_no_percentile_of_nothing_or_outside_the_range(values: list[float], p: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, p)


def test_summary() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 100.0]
    assert summary(values) == {"count": 6, "min": 1.0, "p50": 3.0, "p95": 100.0, "p99": 100.0, "max": 100.0}
    assert summary([1.26, 2.0], ndigits=1) == {"count": 2, "min": 1.3, "p50": 1.3, "p95": 2.0, "p99": 2.0, "max": 2.0}


def test_summary_of_nothing_has_no_figures() -> None:
    assert summary([]) == {"count": 0, "min": None, "p50": None, "p95": None, "p99": None, "max": None}
