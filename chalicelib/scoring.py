"""Score one SQS batch: the I/O around chalicelib.decisions.

Flow per batch: parse records -> one transaction that locks the tasks and
loads their ads (one query), scores them together, parks permanent failures
in the DLQ and writes every outcome (one statement) -> back off the retries
-> return the partial batch response, so only retried messages come back.

Powertools' BatchProcessor is per record; scoring here is set-based (one
query, one model call, one write per batch), so the batch response is built
directly in the format Lambda expects: {"batchItemFailures": [...]}.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from chalicelib import metrics
from chalicelib.decisions import (
    Decision,
    Delivery,
    Outcome,
    Score,
    backoff_seconds,
    parse_record,
    plan_batch,
    trail,
    whole_batch_failure,
)
from chalicelib.errors import ModerationError
from chalicelib.features import AdFeatures, InvalidFeatures
from chalicelib.logs import logger
from chalicelib.queue import TaskQueue, VisibilityChange, utc_now_iso
from chalicelib.storage import PERMANENT, TRANSIENT, BatchWrite, ClaimedTask, ModerationStore


class Model(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def threshold(self) -> float: ...

    def predict_proba(self, ads: Sequence[AdFeatures]) -> list[float]: ...


class Scorer:
    def __init__(
        self,
        store: ModerationStore,
        queue: TaskQueue,
        model: Model,
        *,
        retry_base_seconds: int,
        default_max_receive_count: int,
    ) -> None:
        self._store = store
        self._queue = queue
        self._model = model
        self._retry_base = retry_base_seconds
        self._default_max_receive = default_max_receive_count

    def handle(self, records: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
        started = time.perf_counter()
        deliveries = [parse_record(r) for r in records]
        max_receive = self._queue.max_receive_count(self._default_max_receive)
        ages: dict[int, float] = {}
        try:
            decisions, ages = self._process(deliveries, max_receive)
        except Exception as exc:  # noqa: BLE001 - whole-batch failure: nothing was written
            error = exc.message if isinstance(exc, ModerationError) else f"{type(exc).__name__}: {exc}"
            logger.exception("batch failed as a whole; retrying every message", extra={"error": error})
            decisions = whole_batch_failure(deliveries, error, max_receive)
            self._fail_exhausted(decisions)
        self._back_off(decisions)
        _log_outcomes(decisions)
        _emit_metrics(decisions, ages, (time.perf_counter() - started) * 1000)
        return {
            "batchItemFailures": [
                {"itemIdentifier": d.delivery.message_id} for d in decisions if not d.outcome.acknowledged
            ]
        }

    def _process(self, deliveries: list[Delivery], max_receive: int) -> tuple[list[Decision], dict[int, float]]:
        decisions: list[Decision] = []

        def decide(claimed: dict[int, ClaimedTask], locked_elsewhere: set[int]) -> BatchWrite:
            scores = self._score(claimed)
            decisions[:] = plan_batch(
                deliveries,
                claimed,
                locked_elsewhere,
                scores,
                threshold=self._model.threshold,
                max_receive_count=max_receive,
                now_iso=utc_now_iso(),
            )
            envelopes = [d.envelope for d in decisions if d.envelope is not None]
            # Inside the transaction on purpose: if the DLQ refuses, nothing is
            # committed and the batch is retried instead of losing envelopes.
            if envelopes:
                self._queue.send_to_dlq(envelopes)
            return BatchWrite(
                updates=[d.update for d in decisions if d.update is not None],
                events=trail(decisions, claimed, set(claimed) | locked_elsewhere),
            )

        task_ids = [d.message.task_id for d in deliveries if d.message is not None]
        ages = self._store.score_batch(task_ids, decide, model_version=self._model.version)
        return decisions, ages

    def _score(self, claimed: Mapping[int, ClaimedTask]) -> dict[int, Score]:
        scores: dict[int, Score] = {}
        valid: dict[int, AdFeatures] = {}
        for task in claimed.values():
            if task.ad is None or not task.claimable:
                continue
            try:
                valid[task.task_id] = task.ad.features().validate()
            except InvalidFeatures as exc:
                scores[task.task_id] = Score(invalid=str(exc))
        if not valid:
            return scores
        try:
            probabilities = self._model.predict_proba(list(valid.values()))
            scores.update({tid: Score(probability=p) for tid, p in zip(valid, probabilities, strict=True)})
        except Exception:  # noqa: BLE001 - isolate the ad that breaks the model
            for tid, features in valid.items():
                try:
                    scores[tid] = Score(probability=self._model.predict_proba([features])[0])
                except Exception as exc:  # noqa: BLE001 - an unexpected error is transient
                    scores[tid] = Score(crashed=f"{type(exc).__name__}: {exc}")
        return scores

    def _fail_exhausted(self, decisions: list[Decision]) -> None:
        """Last attempt of a whole-batch failure: fail the tasks if the DB lets us.

        The batch shares one error, so its reason differs only by attempt
        number: one UPDATE per distinct attempt (normally one for the batch).
        If the DB refuses, the reconciler fails them later as stuck.
        """
        by_attempt: dict[int, tuple[str, list[int]]] = {}
        for d in decisions:
            if d.outcome is Outcome.EXHAUSTED and d.delivery.message is not None:
                reason = d.error or "failed"
                by_attempt.setdefault(d.delivery.attempt, (reason, []))[1].append(d.delivery.message.task_id)
        for attempt, (reason, task_ids) in by_attempt.items():
            try:
                self._store.fail_unfinished(task_ids, reason=reason, kind=TRANSIENT, attempt=attempt)
            except ModerationError as exc:
                logger.warning("could not mark tasks failed", extra={"task_ids": task_ids, "error": exc.message})
                return

    def _back_off(self, decisions: list[Decision]) -> None:
        changes = []
        for d in decisions:
            if d.outcome.acknowledged:
                continue
            # An exhausted message goes straight back (visibility 0) so the
            # redrive policy moves it to the DLQ on the next receive.
            seconds = 0 if d.outcome is Outcome.EXHAUSTED else backoff_seconds(d.delivery.attempt, self._retry_base)
            changes.append(VisibilityChange(d.delivery.receipt_handle, seconds))
        if changes:
            self._queue.change_visibility(changes)


def _log_outcomes(decisions: Sequence[Decision]) -> None:
    """One line per batch for the completed tasks (their ids and request ids),
    one line per message for every other outcome.

    A line per completed message was ~40 % of the scorer's CPU at batch 100
    (Powertools formats each record); the happy path is summarised, anything
    unusual keeps its own line, and every task's request id is in the logs
    either way. POWERTOOLS_LOG_LEVEL=DEBUG adds a line per completed message.
    """
    completed = [d for d in decisions if d.outcome is Outcome.COMPLETED]
    if completed:
        logger.info(
            "batch scored",
            extra={
                "outcome": Outcome.COMPLETED.value,
                "completed": len(completed),
                "batch_size": len(decisions),
                "task_ids": [d.task_id for d in completed],
                "request_ids": [d.delivery.request_id for d in completed],
            },
        )
    for d in decisions:
        if d.outcome is not Outcome.COMPLETED:
            _log_outcome(d, logger.info)
        elif logger.log_level <= logging.DEBUG:
            _log_outcome(d, logger.debug)


def _log_outcome(d: Decision, log: Callable[..., None]) -> None:
    msg = d.delivery.message
    log(
        "message outcome",
        extra={
            "outcome": d.outcome.value,
            "task_id": msg.task_id if msg else None,
            "item_id": msg.item_id if msg else None,
            "message_id": d.delivery.message_id,
            "attempt": d.delivery.attempt,
            "request_id": d.delivery.request_id,
            "error_kind": d.error_kind,
            "error": d.error,
        },
    )


def _emit_metrics(decisions: Sequence[Decision], ages: Mapping[int, float], elapsed_ms: float) -> None:
    """One EMF document per batch (chalicelib.metrics)."""
    outcomes = [d.outcome for d in decisions]
    metrics.emit(
        "score",
        {
            metrics.BATCH_SIZE: len(decisions),
            metrics.COMPLETED: outcomes.count(Outcome.COMPLETED),
            metrics.RETRIED: outcomes.count(Outcome.RETRY),
            metrics.SENT_TO_DLQ: outcomes.count(Outcome.FAILED_PERMANENT) + outcomes.count(Outcome.EXHAUSTED),
        },
        milliseconds={
            metrics.SCORING_LATENCY: [elapsed_ms],
            metrics.SUBMIT_TO_COMPLETED: [age * 1000 for age in ages.values()],
        },
        failed_by_kind={
            PERMANENT: outcomes.count(Outcome.FAILED_PERMANENT),
            TRANSIENT: outcomes.count(Outcome.EXHAUSTED),
        },
    )
