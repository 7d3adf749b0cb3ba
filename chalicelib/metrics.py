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
PURGED = "TasksPurged"  # retention: finished tasks deleted, and their trail rows
EVENTS_PURGED = "TaskEventsPurged"
BATCH_SIZE = "BatchSize"
# A function could not adopt what a model alias names (chalicelib/serving/aliases.py): alarmed.
MODEL_REFUSED = "ModelRefused"
# Shadow scoring (chalicelib/scoring/scorer.py): verdicts recorded, and batches whose shadow failed.
SHADOW_SCORED = "ShadowScored"
SHADOW_FAILED = "ShadowFailed"
# The human review loop (docs/reviews.md): verdicts and appeals counted; the backlog, emitted
# whenever it is read (GET /health/pipeline, which probes poll): its depth (a count), and the
# oldest waiting task's age (milliseconds, below), which the template alarms on.
REVIEWS_DECIDED = "ReviewsDecided"
APPEALED = "AppealsFiled"
APPEALS_DECIDED = "AppealsDecided"
REVIEW_QUEUE_DEPTH = "ReviewQueueDepth"
# Milliseconds
SCORING_LATENCY = "ScoringLatency"
SUBMIT_TO_COMPLETED = "SubmitToCompletedLatency"
REVIEW_OLDEST_AGE = "ReviewOldestAge"  # 0 when nothing waits

# Values of one metric in one EMF document (the format's limit).
MAX_VALUES = 100


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
    chunks = {name: [values[i : i + MAX_VALUES] for i in range(0, len(values), MAX_VALUES)]
              for name, values in (milliseconds or {}).items()}
    for n in range(max((len(c) for c in chunks.values()), default=1)):
        for name, parts in chunks.items():
            if n < len(parts):
                _add_values(metrics, name, parts[n])
        _flush(metrics)
        metrics = _metrics(function)
    for kind, value in (failed_by_kind or {}).items():
        if value:
            by_kind = _metrics(function)
            by_kind.add_dimension(name="error_kind", value=kind)
            by_kind.add_metric(name=FAILED, unit=MetricUnit.Count, value=value)
            _flush(by_kind)


def _add_values(metrics: EphemeralMetrics, name: str, values: Sequence[float]) -> None:
    """Several values of one metric in one document (EMF allows up to 100).

    The first goes through add_metric (name/unit validation); the rest are
    appended to the same value list, because add_metric formats the whole
    metric into a debug string on every call: O(n^2) for a batch's
    latencies, about a tenth of the scorer's time at batch 100.
    """
    if not values:
        return
    metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=round(values[0], 3))
    metrics.metric_set[name]["Value"].extend(round(float(v), 3) for v in values[1:])


def _metrics(function: str) -> EphemeralMetrics:
    metrics = EphemeralMetrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), service=SERVICE)
    metrics.add_dimension(name="function", value=function)
    metrics.add_dimension(name="stage", value=os.environ.get("STAGE", "local"))
    return metrics


def _flush(metrics: EphemeralMetrics) -> None:
    if metrics.metric_set:  # an empty flush only warns; say nothing instead
        metrics.flush_metrics()
