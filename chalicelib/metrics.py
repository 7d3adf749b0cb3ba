"""Application metrics, in CloudWatch embedded metric format (Powertools).

An EMF line is a log line that CloudWatch Logs turns into metrics: no
PutMetricData calls, no added latency, nothing to configure locally (the
lines simply appear in the logs). One namespace; every metric carries the
dimensions service, function and stage; TasksFailed also carries error_kind.
infra/resources.json builds the dashboard and alarms on these exact names.

Every emission builds and prints its own document, sharing nothing: Powertools'
Metrics class shares one buffer across instances and threads, and `chalice local`
and the local runner call handlers from several threads at once. The documents
are the ones Powertools' EphemeralMetrics printed, written here directly (`_print`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence

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
    if _disabled():
        return
    namespace, stage = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), os.environ.get("STAGE", "local")
    values: dict[str, tuple[str, list[float]]] = {
        name: (COUNT, [float(value)]) for name, value in (counts or {}).items() if value
    }
    chunks = {name: [values_[i : i + MAX_VALUES] for i in range(0, len(values_), MAX_VALUES)]
              for name, values_ in (milliseconds or {}).items()}
    for n in range(max((len(c) for c in chunks.values()), default=1)):
        for name, parts in chunks.items():
            if n < len(parts) and parts[n]:
                values[name] = (MILLISECONDS, [round(float(v), 3) for v in parts[n]])
        _print(namespace, {"function": function, "stage": stage}, values)
        values = {}
    for kind, value in (failed_by_kind or {}).items():
        if value:
            _print(namespace, {"function": function, "stage": stage, "error_kind": kind}, {FAILED: (COUNT, [float(value)])})


# The document Powertools' EphemeralMetrics printed (same keys, order and compact JSON), written
# directly: building an EphemeralMetrics per document (and one more never printed), validating every
# unit against its enum and formatting a debug string per value took 110 µs a scorer batch, against
# 28 µs now: the scorer's largest fixed cost per batch (docs/performance.md#where-the-time-goes).
COUNT = "Count"
MILLISECONDS = "Milliseconds"


def _print(namespace: str, dimensions: dict[str, str], values: Mapping[str, tuple[str, list[float]]]) -> None:
    if not values:  # an empty document says nothing; Powertools only warned
        return
    dimensions = {**dimensions, "service": SERVICE}
    document: dict[str, object] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [list(dimensions)],
                "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in values.items()],
            }],
        },
        **dimensions,
        **{name: numbers for name, (_, numbers) in values.items()},
    }
    print(json.dumps(document, separators=(",", ":")))


def _disabled() -> bool:
    """Powertools' switches, still honoured: POWERTOOLS_METRICS_DISABLED, and POWERTOOLS_DEV without it."""
    disabled = os.environ.get("POWERTOOLS_METRICS_DISABLED")
    if disabled is not None:
        return disabled.strip().lower() in _TRUE
    return os.environ.get("POWERTOOLS_DEV", "false").strip().lower() in _TRUE


_TRUE = {"1", "y", "yes", "t", "true", "on"}
