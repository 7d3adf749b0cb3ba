"""chalicelib.metrics: the EMF documents CloudWatch will read."""

from __future__ import annotations

import json

import pytest

from chalicelib import metrics


def documents(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_counts_latencies_and_failures_by_kind(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "prod")
    metrics.emit("score", {metrics.COMPLETED: 2, metrics.RETRIED: 0}, milliseconds={metrics.SCORING_LATENCY: [1.5]},
                 failed_by_kind={"permanent": 1, "transient": 0})
    main, failed = documents(capsys.readouterr().out)
    directive = main["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "AdModeration"
    assert {m["Name"] for m in directive["Metrics"]} == {"TasksCompleted", "ScoringLatency"}  # zero counts left out
    assert (main["function"], main["stage"], main["service"]) == ("score", "prod", "ad-moderation")
    assert failed["error_kind"] == "permanent" and failed["TasksFailed"] == [1.0]
    assert ["function", "stage", "error_kind", "service"] in failed["_aws"]["CloudWatchMetrics"][0]["Dimensions"]


def test_more_than_100_values_are_split_across_documents(capsys: pytest.CaptureFixture[str]) -> None:
    values = [float(i) for i in range(250)]
    metrics.emit("score", {metrics.BATCH_SIZE: 250}, milliseconds={metrics.SUBMIT_TO_COMPLETED: values})
    docs = documents(capsys.readouterr().out)
    lists = [d[metrics.SUBMIT_TO_COMPLETED] for d in docs]
    assert [len(v) for v in lists] == [100, 100, 50]
    assert [x for v in lists for x in v] == values
    assert [d.get(metrics.BATCH_SIZE) for d in docs] == [[250.0], None, None]  # counted once


def test_nothing_to_say_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.emit("reconcile", {metrics.RESENT: 0}, failed_by_kind={"stuck": 0})
    assert capsys.readouterr().out == ""
