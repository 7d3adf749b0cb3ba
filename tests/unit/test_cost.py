"""The bench's cost model (measure/bench/cost.py): the price table and the pure bill."""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any

import pytest

from measure.bench import cost

USAGE = cost.Usage(
    api_memory_mb=256, score_memory_mb=512, reconcile_memory_mb=256,
    api_submit_ms=40.0, api_poll_ms=20.0, score_ms_batch1=1.5, score_ms_batch10=2.5,
    score_log_bytes_batch1=1200.0, score_log_bytes_batch10=2400.0, api_submit_log_bytes=500.0,
    batch_size=10, batching_window_s=1.0, interface_endpoints=3, alarms=12, dashboards=1,
)


@pytest.fixture(scope="module")
def prices() -> dict[str, Any]:
    return cost.load_prices()


def test_every_price_is_dated_sourced_and_positive(prices: dict[str, Any]) -> None:
    datetime.date.fromisoformat(prices["as_of"])
    assert prices["region"] == "us-east-1"
    for name, price in prices["prices"].items():
        assert price["usd"] > 0, name
        assert price["source"].startswith("https://"), name
        assert isinstance(price["verified"], bool), name
        assert price["unit"], name


def test_api_gateway_is_one_request_per_submit_and_per_poll(prices: dict[str, Any]) -> None:
    per_request = prices["prices"]["api_gateway_rest_request"]["usd"]
    polling = cost.serverless_bill(USAGE, prices, 1_000_000, "polling")
    webhooks = cost.serverless_bill(USAGE, prices, 1_000_000, "webhooks")
    assert polling["api_gateway"] == pytest.approx(4_000_000 * per_request)  # submit + 3 polls
    assert webhooks["api_gateway"] == pytest.approx(1_000_000 * per_request)


def test_fixed_lines_do_not_move_with_volume(prices: dict[str, Any]) -> None:
    small = cost.serverless_bill(USAGE, prices, 100_000, "polling")
    large = cost.serverless_bill(USAGE, prices, 10_000_000, "polling")
    for line in ("vpc_endpoints", "metrics_alarms_dashboards", "database"):
        assert small[line] == large[line], line
    # 3 interface endpoints in 2 AZs, every hour of the month
    assert small["vpc_endpoints"] == pytest.approx(3 * 2 * prices["hours_per_month"]
                                                   * prices["prices"]["vpc_interface_endpoint_hour"]["usd"])
    for line in ("api_gateway", "lambda", "sqs", "logs"):
        assert large[line] > small[line], line


def test_batches_fill_with_the_rate_up_to_the_batch_size(prices: dict[str, Any]) -> None:
    hours = prices["hours_per_month"]
    assert cost.average_batch(USAGE, 1_000, hours) == pytest.approx(1.0, abs=1e-3)
    assert 1.0 < cost.average_batch(USAGE, 10_000_000, hours) < USAGE.batch_size
    assert cost.average_batch(USAGE, 10**10, hours) == USAGE.batch_size


def test_lambda_is_billed_in_whole_milliseconds_at_the_functions_memory(prices: dict[str, Any]) -> None:
    p = prices["prices"]
    one = cost._lambda_usd(prices, 1_000_000, 0.2, 1024)  # a fraction of a ms is billed as 1 ms
    assert one == pytest.approx(1_000_000 * (0.001 * p["lambda_gb_second"]["usd"] + p["lambda_request"]["usd"]))
    assert cost._lambda_usd(prices, 10, 1.0, 2048) > cost._lambda_usd(prices, 10, 1.0, 1024)


def test_slower_scoring_costs_more(prices: dict[str, Any]) -> None:
    slow = dataclasses.replace(USAGE, score_ms_batch1=15.0, score_ms_batch10=25.0)
    assert (cost.serverless_bill(slow, prices, 10_000_000, "polling")["lambda"]
            > cost.serverless_bill(USAGE, prices, 10_000_000, "polling")["lambda"])


def test_the_same_database_is_in_both_bills(prices: dict[str, Any]) -> None:
    always = cost.always_on_bill(prices)
    assert always["database"] == cost.serverless_bill(USAGE, prices, 1_000_000, "polling")["database"]
    a = prices["assumptions"]["always_on"]
    assert always["vms"] >= a["vms"] * prices["prices"]["ec2_t3_small_hour"]["usd"] * prices["hours_per_month"]


def test_bills_table_and_goal(prices: dict[str, Any]) -> None:
    r = cost.bills(USAGE, prices)
    assert [(row["tasks_per_month"], row["mode"]) for row in r["serverless"]] == [
        (v, m) for v in cost.VOLUMES for m in cost.MODES]
    for row in r["serverless"]:
        assert row["total_usd"] == pytest.approx(sum(row["lines_usd"].values()))
        assert row["share_of_always_on"] == pytest.approx(row["total_usd"] / r["always_on"]["total_usd"])
    per_million = [row["per_million_tasks_usd"] for row in r["serverless"] if row["mode"] == "polling"]
    assert per_million == sorted(per_million, reverse=True)  # fixed costs spread thinner
    goal = next(row for row in r["serverless"] if row["tasks_per_month"] == 1_000_000 and row["mode"] == "polling")
    assert r["goal"]["share"] == goal["share_of_always_on"]
    assert r["goal"]["dominant"] in goal["lines_usd"]
    assert all(math.isfinite(v) for v in goal["lines_usd"].values())


def test_usage_from_the_bench_results(prices: dict[str, Any]) -> None:
    results = {"batch": {"scorer": [
        {"batch": 1, "ms_per_batch": {"p50": 1.4}, "log_bytes_per_message": 900.0},
        {"batch": 10, "ms_per_batch": {"p50": 2.6}, "log_bytes_per_message": 210.0},
        {"batch": 100, "ms_per_batch": {"p50": 11.0}, "log_bytes_per_message": 60.0}]}}
    usage = cost.usage_from(results, prices)
    assert (usage.score_ms_batch1, usage.score_ms_batch10) == (1.4, 2.6)
    assert usage.score_log_bytes_batch10 == pytest.approx(2100.0)  # per batch of 10
    assert usage.api_submit_log_bytes > 100  # the submit's EMF document, printed for real
    assert usage.assumed == ("api_submit_ms", "api_poll_ms")  # no e2e section in these results
    assert usage.interface_endpoints >= 1 and usage.alarms >= 1
    with_e2e = {**results, "e2e": {"load": {"by_kind": {"submit": {"p50_ms": 90.0}, "poll": {"p50_ms": 30.0}}}}}
    measured = cost.usage_from(with_e2e, prices)
    assert (measured.api_submit_ms, measured.api_poll_ms, measured.assumed) == (90.0, 30.0, ())


def test_report_lines_and_chart(prices: dict[str, Any], tmp_path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = cost.bills(USAGE, prices)
    text = "\n".join(cost.lines(r))
    assert "always-on" in text and "goal: at 1,000,000 tasks/month" in text
    fig, ax = plt.subplots()
    cost.chart(ax, r)
    fig.savefig(tmp_path / "cost.png")
    plt.close(fig)
    assert (tmp_path / "cost.png").stat().st_size > 0
