"""What it costs: the bench's measured figures turned into monthly bills.

`bills()` is pure: a `Usage` (what one task costs in requests, milliseconds and
log bytes, and what the stack costs whatever it does) and the price table
(measure/bench/prices.json: us-east-1, dated, each price with its source) in,
dollars out, at 100 k, 1 M and 10 M tasks a month, for two ways a client
learns the verdict (polling: one submit and POLLS reads a task; webhooks: one
submit and one delivery), beside an always-on alternative like the older
services' (two small VMs, a two-broker managed Kafka) on the same database.

`usage_from()` reads the `Usage` from what `make bench` measured: the
scorer's milliseconds and log bytes per batch at batch 1 and 10 (the batch
section), the API's request latencies (the e2e section, when it ran: wall time
under 32 clients on a shared machine, an upper bound), the bytes of the EMF
line a submit prints (measured here), the functions' memory (.chalice/config.json),
the scoring batch size and window (infra/stages.json, prod), and the stack's
fixed parts (infra/resources.json: interface endpoints, alarms, dashboards).
What it cannot measure comes from the price file's `assumptions`, and the
report says which figures were assumed. docs/performance.md#what-it-costs.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit import names

PRICES_PATH = Path(__file__).with_name("prices.json")
VOLUMES = (100_000, 1_000_000, 10_000_000)
MODES = ("polling", "webhooks")
GOAL_VOLUME = 1_000_000
GOAL_SHARE = 0.25  # serverless bill <= a quarter of the always-on one, at GOAL_VOLUME, polling
SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class Usage:
    """What the serverless stack uses: per task (requests, milliseconds, bytes) and per month (fixed)."""

    api_memory_mb: int
    score_memory_mb: int
    reconcile_memory_mb: int
    api_submit_ms: float  # one submit's handler duration
    api_poll_ms: float  # one poll's
    score_ms_batch1: float  # Scorer.handle at batch 1 (ms per batch, p50)
    score_ms_batch10: float  # at batch 10
    score_log_bytes_batch1: float  # what the scorer prints per batch of 1
    score_log_bytes_batch10: float  # per batch of 10
    api_submit_log_bytes: float  # the EMF line a submit prints
    batch_size: int  # the scoring event source mapping's BatchSize
    batching_window_s: float  # and its MaximumBatchingWindowInSeconds
    interface_endpoints: int  # VPC interface endpoints the prod template creates (per AZ)
    alarms: int
    dashboards: int
    assumed: tuple[str, ...] = ()  # the fields above that were not measured


def load_prices(path: Path = PRICES_PATH) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _price(prices: Mapping[str, Any], name: str) -> float:
    return float(prices["prices"][name]["usd"])


def average_batch(usage: Usage, tasks_per_month: int, hours_per_month: float) -> float:
    """Messages per scoring invocation at a steady rate: the first message opens the batching
    window, whatever arrives within it joins, up to the batch size (real traffic is burstier:
    larger batches, a smaller bill)."""
    rate = tasks_per_month / (hours_per_month * SECONDS_PER_HOUR)
    return max(1.0, min(float(usage.batch_size), 1.0 + rate * usage.batching_window_s))


def _between(at1: float, at10: float, n: float) -> float:
    """A batch's figure at n messages, on the line through the measured batches of 1 and 10."""
    return at1 + (n - 1.0) * (at10 - at1) / 9.0


def _cpu_factor(prices: Mapping[str, Any], memory_mb: int) -> float:
    """Lambda gives a function CPU in proportion to its memory, a whole vCPU at ~1,769 MB: time
    measured on a whole core is stretched by this (as if every millisecond were CPU: an upper bound)."""
    return max(1.0, float(prices["assumptions"]["lambda_full_cpu_memory_mb"]) / memory_mb)


def _lambda_usd(prices: Mapping[str, Any], invocations: float, billed_ms: float, memory_mb: int) -> float:
    gb_seconds = invocations * math.ceil(billed_ms) / 1000.0 * memory_mb / 1024.0
    return gb_seconds * _price(prices, "lambda_gb_second") + invocations * _price(prices, "lambda_request")


def serverless_bill(usage: Usage, prices: Mapping[str, Any], tasks: int, mode: str) -> dict[str, float]:
    """The month's bill, by line, for `tasks` tasks answered by `mode` (polling | webhooks)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    a, hours = prices["assumptions"], float(prices["hours_per_month"])
    polls = float(a["polls_per_task"]) if mode == "polling" else 0.0
    platform = float(a["lambda_platform_log_bytes_per_invocation"])
    access = float(a["api_access_log_bytes_per_request"])
    n = average_batch(usage, tasks, hours)
    batches = tasks / n
    score_ms = _between(usage.score_ms_batch1, usage.score_ms_batch10, n) * _cpu_factor(prices, usage.score_memory_mb)
    api_requests = tasks * (1.0 + polls)
    lam = (_lambda_usd(prices, tasks, usage.api_submit_ms, usage.api_memory_mb)
           + _lambda_usd(prices, tasks * polls, usage.api_poll_ms, usage.api_memory_mb)
           + _lambda_usd(prices, batches, score_ms, usage.score_memory_mb)
           + _lambda_usd(prices, float(a["reconcile_invocations_per_month"]), float(a["reconcile_ms"]),
                         usage.reconcile_memory_mb))
    log_bytes = (tasks * (platform + access + usage.api_submit_log_bytes)
                 + tasks * polls * (platform + access)
                 + batches * (platform + _between(usage.score_log_bytes_batch1, usage.score_log_bytes_batch10, n))
                 + float(a["reconcile_invocations_per_month"]) * platform)
    if mode == "webhooks":
        # One delivery per task by the webhook sender (not measured here: issue 22's outbox).
        lam += _lambda_usd(prices, tasks, float(a["webhook_delivery_ms"]), int(a["webhook_memory_mb"]))
        log_bytes += tasks * (platform + float(a["webhook_log_bytes_per_task"]))
    log_gb = log_bytes / 1e9
    # SendMessage per task; ReceiveMessage and DeleteMessageBatch per batch; the event
    # source mapping's long polls of an idle queue whatever the traffic.
    sqs_requests = tasks + 2.0 * batches + float(a["sqs_idle_receives_per_month"])
    endpoint_hours = usage.interface_endpoints * int(a["availability_zones"]) * hours
    return {
        "api_gateway": api_requests * _price(prices, "api_gateway_rest_request"),
        "lambda": lam,
        "sqs": sqs_requests * _price(prices, "sqs_request"),
        "logs": log_gb * (_price(prices, "logs_ingest_gb")
                          + float(a["log_retention_months"]) * _price(prices, "logs_storage_gb_month")),
        "metrics_alarms_dashboards": (int(a["custom_metrics"]) * _price(prices, "custom_metric_month")
                                      + usage.alarms * _price(prices, "alarm_month")
                                      + usage.dashboards * _price(prices, "dashboard_month")),
        "vpc_endpoints": endpoint_hours * _price(prices, "vpc_interface_endpoint_hour"),
        "database": database_usd(prices),
    }


def database_usd(prices: Mapping[str, Any]) -> float:
    """The same PostgreSQL in both bills: RDS db.t4g.small, single-AZ, with its storage."""
    return (_price(prices, "rds_db_t4g_small_hour") * float(prices["hours_per_month"])
            + float(prices["assumptions"]["database_storage_gb"]) * _price(prices, "rds_gp3_gb_month"))


def always_on_bill(prices: Mapping[str, Any]) -> dict[str, float]:
    """The older services' shape: two small VMs (API and worker), a two-broker managed Kafka,
    the same database; the same bill at every volume this table reaches."""
    a, hours = prices["assumptions"]["always_on"], float(prices["hours_per_month"])
    return {
        "vms": a["vms"] * (_price(prices, "ec2_t3_small_hour") * hours + a["vm_disk_gb"] * _price(prices, "ebs_gp3_gb_month")),
        "kafka": a["kafka_brokers"] * (_price(prices, "msk_kafka_t3_small_hour") * hours
                                       + a["kafka_storage_gb_per_broker"] * _price(prices, "msk_storage_gb_month")),
        "database": database_usd(prices),
    }


def bills(usage: Usage, prices: Mapping[str, Any], volumes: tuple[int, ...] = VOLUMES) -> dict[str, Any]:
    """Every bill, the per-task figures behind them and the goal's verdict."""
    always = always_on_bill(prices)
    rows: list[dict[str, Any]] = []
    for tasks in volumes:
        for mode in MODES:
            lines = serverless_bill(usage, prices, tasks, mode)
            total = sum(lines.values())
            rows.append({"tasks_per_month": tasks, "mode": mode, "lines_usd": lines, "total_usd": total,
                         "per_million_tasks_usd": total / tasks * 1e6,
                         "share_of_always_on": total / sum(always.values()),
                         "average_batch": average_batch(usage, tasks, float(prices["hours_per_month"]))})
    goal = next(r for r in rows if r["tasks_per_month"] == GOAL_VOLUME and r["mode"] == "polling") \
        if GOAL_VOLUME in volumes else None
    # What the share would be without the fixed lines one could argue away: the prod template's
    # interface endpoints (a stage without a VPC has none), and the database both bills share.
    without: dict[str, float] = {}
    if goal:
        g, total_always = goal["lines_usd"], sum(always.values())
        without = {"share_without_vpc_endpoints": (goal["total_usd"] - g["vpc_endpoints"]) / total_always,
                   "share_without_vpc_endpoints_and_database": (goal["total_usd"] - g["vpc_endpoints"] - g["database"])
                   / (total_always - always["database"])}
    return {
        "usage": asdict(usage),
        "serverless": rows,
        "always_on": {"lines_usd": always, "total_usd": sum(always.values())},
        "goal": {"tasks_per_month": GOAL_VOLUME, "mode": "polling", "max_share": GOAL_SHARE,
                 "share": goal["share_of_always_on"] if goal else None,
                 "dominant": max(goal["lines_usd"].items(), key=lambda kv: kv[1])[0] if goal else None, **without},
        "prices": {"file": str(PRICES_PATH.relative_to(names.ROOT)), "as_of": prices["as_of"], "region": prices["region"],
                   "unverified": sorted(k for k, v in prices["prices"].items() if not v.get("verified"))},
        "assumptions": {k: v for k, v in prices["assumptions"].items() if not k.startswith("_")},
    }


# --- from the bench's results ---------------------------------------------------------------------------------


def submit_log_bytes() -> int:
    """The bytes of the EMF document a submit prints (chalicelib.moderation.service), measured."""
    from chalicelib import metrics

    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # Powertools prints the document
        metrics.emit("api_handler", {metrics.SUBMITTED: 1})
    return len(out.getvalue().encode())


def _template_counts() -> dict[str, Any]:
    resources = json.loads((names.ROOT / "infra" / "resources.json").read_text(encoding="utf-8"))["Resources"]
    kinds = [r.get("Type") for r in resources.values()]
    return {"interface_endpoints": sum(1 for k, r in resources.items() if r.get("Type") == "AWS::EC2::VPCEndpoint"
                                       and r.get("Properties", {}).get("VpcEndpointType") == "Interface"),
            "alarms": kinds.count("AWS::CloudWatch::Alarm"), "dashboards": kinds.count("AWS::CloudWatch::Dashboard")}


def usage_from(results: Mapping[str, Any], prices: Mapping[str, Any]) -> Usage:
    """The `Usage` the bench measured (batch section required; e2e optional)."""
    config = json.loads((names.ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))["lambda_functions"]
    stage = json.loads((names.ROOT / "infra" / "stages.json").read_text(encoding="utf-8"))["prod"]
    by_size = {row["batch"]: row for row in results["batch"]["scorer"]}
    assumed: list[str] = []
    api: dict[str, Any] = {}
    for kind, key in (("submit", "api_submit_ms"), ("poll", "api_poll_ms")):
        figure = (results.get("e2e", {}).get("load", {}).get("by_kind", {}).get(kind) or {}).get("p50_ms")
        if figure is None:
            assumed.append(key)
            figure = prices["assumptions"][key]
        api[key] = float(figure)
    return Usage(
        api_memory_mb=int(config["api_handler"]["lambda_memory_size"]),
        score_memory_mb=int(config["score"]["lambda_memory_size"]),
        reconcile_memory_mb=int(config["reconcile"]["lambda_memory_size"]),
        score_ms_batch1=float(by_size[1]["ms_per_batch"]["p50"]),
        score_ms_batch10=float(by_size[10]["ms_per_batch"]["p50"]),
        score_log_bytes_batch1=float(by_size[1]["log_bytes_per_message"]),
        score_log_bytes_batch10=10.0 * float(by_size[10]["log_bytes_per_message"]),
        api_submit_log_bytes=float(submit_log_bytes()),
        batch_size=int(stage["scoring_batch_size"]),
        batching_window_s=float(stage["scoring_batching_window_seconds"]),
        **_template_counts(),
        **api,
        assumed=tuple(assumed),
    )


def run(results: Mapping[str, Any]) -> dict[str, Any]:
    prices = load_prices()
    return bills(usage_from(results, prices), prices)


# --- the report --------------------------------------------------------------------------------------------------

LINE_LABELS = {"api_gateway": "API Gateway", "lambda": "Lambda", "sqs": "SQS", "logs": "CloudWatch Logs",
               "metrics_alarms_dashboards": "metrics+alarms", "vpc_endpoints": "VPC endpoints", "database": "database"}


def _usd(v: float) -> str:
    return f"${v:,.0f}" if v >= 100 else f"${v:,.2f}"


def lines(r: Mapping[str, Any]) -> list[str]:
    from measure.bench.table import table

    u, g, always = r["usage"], r["goal"], r["always_on"]
    out = [f"5. COST per month, us-east-1, prices of {r['prices']['as_of']} ({r['prices']['file']}; "
           f"{len(r['prices']['unverified'])} not verified on that date: see the file), no free tier"]
    rows = [[f"{row['tasks_per_month']:,}", row["mode"], *(_usd(row["lines_usd"][k]) for k in LINE_LABELS),
             _usd(row["total_usd"]), _usd(row["per_million_tasks_usd"]), f"{row['share_of_always_on']:.2f}"]
            for row in r["serverless"]]
    rows.append(["any", "always-on", "", "", "", "", "", "", _usd(always["lines_usd"]["database"]),
                 _usd(always["total_usd"]), "", "1.00"])
    out += table(["tasks/month", "serverless", *LINE_LABELS.values(), "total", "per 1M tasks", "x always-on"], rows,
                  align="ll" + "r" * (len(LINE_LABELS) + 3))
    a = always["lines_usd"]
    out.append(f"  always-on: 2 x t3.small {_usd(a['vms'])} + MSK 2 x kafka.t3.small {_usd(a['kafka'])} + the same "
               f"database {_usd(a['database'])} = {_usd(always['total_usd'])}")
    verdict = "met" if g["share"] is not None and g["share"] <= g["max_share"] else "MISSED"
    out.append(f"  goal: at {g['tasks_per_month']:,} tasks/month ({g['mode']}) <= {g['max_share']} of always-on: "
               f"{g['share']:.2f} {verdict}; largest line: {LINE_LABELS.get(g['dominant'], g['dominant'])}; "
               f"without the VPC endpoints {g['share_without_vpc_endpoints']:.2f}, and without the shared database "
               f"{g['share_without_vpc_endpoints_and_database']:.2f}")
    out.append(f"  measured: scorer {u['score_ms_batch1']:.1f} / {u['score_ms_batch10']:.1f} ms and "
               f"{u['score_log_bytes_batch1']:.0f} / {u['score_log_bytes_batch10']:.0f} log bytes per batch of 1 / 10 "
               f"(x{_cpu_factor(load_prices(), u['score_memory_mb']):.1f} for {u['score_memory_mb']} MB's CPU share); "
               f"submit {u['api_submit_ms']:.0f} ms, poll {u['api_poll_ms']:.0f} ms; submit EMF "
               f"{u['api_submit_log_bytes']:.0f} B; {u['interface_endpoints']} interface endpoints x "
               f"{r['assumptions']['availability_zones']} AZs, {u['alarms']} alarms, {u['dashboards']} dashboard(s)")
    if u["assumed"]:
        out.append(f"  assumed (not measured in this run): {', '.join(u['assumed'])} (prices.json assumptions)")
    return out


def chart(ax: Any, r: Mapping[str, Any]) -> None:
    """Stacked monthly bills: serverless (polling, webhooks) at each volume, and always-on."""
    bars = [(f"{row['tasks_per_month'] / 1e6:g}M\n{row['mode'][:4]}", row["lines_usd"]) for row in r["serverless"]]
    bars.append(("always\non", {"vms + kafka": r["always_on"]["total_usd"] - r["always_on"]["lines_usd"]["database"],
                                "database": r["always_on"]["lines_usd"]["database"]}))
    keys = [*LINE_LABELS, "vms + kafka"]
    colors = dict(zip(keys, ["tab:purple", "tab:orange", "tab:green", "tab:olive", "tab:pink", "tab:cyan", "tab:grey",
                             "tab:brown"], strict=True))
    for i, (_, parts) in enumerate(bars):
        bottom = 0.0
        for key in keys:
            if parts.get(key):
                ax.bar(i, parts[key], bottom=bottom, color=colors[key],
                       label=LINE_LABELS.get(key, key) if i in (0, len(bars) - 1) else None)
                bottom += parts[key]
        ax.annotate(_usd(bottom), (i, bottom), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=7)
    ax.set_ylabel("USD per month (us-east-1, on demand)")
    g = r["goal"]
    ax.set_title(f"Monthly bill: 1M tasks polling = {g['share']:.2f} x always-on (goal <= {g['max_share']})")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=7)
