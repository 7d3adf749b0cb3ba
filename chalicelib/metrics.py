"""Application metrics, in CloudWatch embedded metric format (Powertools).

An EMF line is a log line that CloudWatch Logs turns into metrics: no
PutMetricData calls, no added latency, nothing to configure locally (the
lines simply appear in the logs). One namespace; every metric carries the
dimensions service, function and stage; TasksFailed also carries error_kind.
infra/resources.json builds the dashboard and alarms on these exact names.

Every emission builds its own EphemeralMetrics: Powertools' Metrics class
shares one buffer across instances and threads, and `chalice local` and the
local runner call handlers from several threads at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

NAMESPACE = "AdModeration"
SERVICE = "ad-moderation"

# Counts
SUBMITTED = "TasksSubmitted"
COMPLETED = "TasksCompleted"
FAILED = "TasksFailed"  # + dimension error_kind
RETRIED = "TasksRetried"
SENT_TO_DLQ = "TasksSentToDLQ"
RESENT = "TasksResent"
BATCH_SIZE = "BatchSize"
# Milliseconds
SCORING_LATENCY = "ScoringLatency"
SUBMIT_TO_COMPLETED = "SubmitToCompletedLatency"


def emit(
    function: str,
    counts: Mapping[str, int] | None = None,
    *,
    milliseconds: Mapping[str, Sequence[float]] | None = None,
    failed_by_kind: Mapping[str, int] | None = None,
) -> None:
    """Print one EMF document for `function` (zero counts are left out)."""
    metrics = _metrics(function)
    for name, value in (counts or {}).items():
        if value:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for name, values in (milliseconds or {}).items():
        for v in values:  # several values of one metric share a document (EMF allows 100)
            metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=round(v, 3))
    _flush(metrics)
    for kind, value in (failed_by_kind or {}).items():
        if value:
            by_kind = _metrics(function)
            by_kind.add_dimension(name="error_kind", value=kind)
            by_kind.add_metric(name=FAILED, unit=MetricUnit.Count, value=value)
            _flush(by_kind)


def _metrics(function: str) -> EphemeralMetrics:
    metrics = EphemeralMetrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), service=SERVICE)
    metrics.add_dimension(name="function", value=function)
    metrics.add_dimension(name="stage", value=os.environ.get("STAGE", "local"))
    return metrics


def _flush(metrics: EphemeralMetrics) -> None:
    if metrics.metric_set:  # an empty flush only warns; say nothing instead
        metrics.flush_metrics()
