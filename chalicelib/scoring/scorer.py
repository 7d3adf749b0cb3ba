"""Score one SQS batch: the use case around chalicelib.scoring.dispositions.

    parse -> claim -> score -> decide -> write -> commit -> send -> back off -> respond

One transaction (the unit of work this module opens) locks the tasks and
loads their ads (one query), the model scores them together, the pure
`plan_batch` decides every message's fate, and every outcome is written (one
statement). Only after the commit are the envelopes of permanent failures
sent to the DLQ, so no database lock waits on SQS; then the retries are backed
off and the partial batch response goes back, so only retried messages return.

Nothing is lost between the commit and the send. A message is acknowledged
only once its envelope is in the DLQ; a permanently failed task records that
with a `dlq_parked` trail row, written after the send. If the send fails, its
messages are reported as batch item failures and come back; if the process
dies between the commit and the send, Lambda deletes nothing and the whole
batch comes back. Either way the redelivered message finds its task `failed`
(permanent) without `dlq_parked`, and its envelope is sent then. A message
without a task (malformed, unknown task) has only its envelope as a record:
it is simply retried. Delivery is at least once: a death after the send but
before the `dlq_parked` row (or two deliveries of one task racing in that
window) gives a second envelope with the same task_id, which ops recognise
by task_id (`make dlq`).

The model: one `Snapshot` of the versions the registry's aliases name
(chalicelib.serving.aliases) per batch, so every verdict of a batch comes from one
version. When a `shadow` version is set, the batch's completed tasks are
scored again with it after the commit and its verdicts recorded in
shadow_verdicts (make model-compare): in a transaction of its own, so nothing
the shadow does (a crash, a slow or failed insert) can fail, retry or delay a
task's verdict; a failure is logged and counted (ShadowFailed).

Powertools' BatchProcessor is per record; scoring here is set-based (one
query, one model call, one write per batch), so the batch response is built
directly in the format Lambda expects: {"batchItemFailures": [...]}.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chalicelib import metrics
from chalicelib.domain.events import Due, task_events
from chalicelib.domain.features import AdFeatures, InvalidFeatures
from chalicelib.domain.tasks import COMPLETED, PERMANENT, TRANSIENT, BatchWrite, ClaimedTask, EventRow, ShadowVerdict
from chalicelib.domain.verdicts import decide
from chalicelib.errors import ModerationError
from chalicelib.logs import logger
from chalicelib.queue import TaskQueue, VisibilityChange, utc_now_iso
from chalicelib.scoring.dispositions import (
    Delivery,
    Disposition,
    Outcome,
    Score,
    backoff_seconds,
    parked,
    parse_record,
    plan_batch,
    trail,
    unparked,
    whole_batch_failure,
)
from chalicelib.serving.aliases import Model, Models, as_models
from chalicelib.storage.scoring import ScoringStore
from chalicelib.storage.webhooks import record_events


class Scorer:
    def __init__(
        self,
        store: ScoringStore,
        queue: TaskQueue,
        model: Model | Models,
        *,
        retry_base_seconds: int,
        default_max_receive_count: int,
        publish: Callable[[Sequence[Due]], None] | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._models = as_models(model)
        self._retry_base = retry_base_seconds
        self._default_max_receive = default_max_receive_count
        # Sends the webhook deliveries the batch's transaction wrote to the outbox (issue 22).
        self._publish = publish

    def handle(self, records: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
        started = time.perf_counter()
        deliveries = [parse_record(r) for r in records]
        max_receive = self._queue.max_receive_count(self._default_max_receive)
        ages: dict[int, float] = {}
        shadowed: int | None = None
        try:
            models = self._models.snapshot()
            dispositions, claimed, ages, scored, due = self._claim_score_write(deliveries, max_receive, models.live)
        except Exception as exc:  # noqa: BLE001 - whole-batch failure: nothing was written
            error = exc.message if isinstance(exc, ModerationError) else f"{type(exc).__name__}: {exc}"
            logger.exception("batch failed as a whole; retrying every message", extra={"error": error})
            dispositions = whole_batch_failure(deliveries, error, max_receive)
            self._fail_exhausted(dispositions)
        else:
            if due and self._publish is not None:
                self._publish_safely(due)  # after the commit; what is not sent, the reconciler sends
            dispositions = self._send_envelopes(dispositions, claimed)  # after the commit
            if models.shadow is not None and models.shadow.version != models.live.version:  # not against itself
                shadowed = self._shadow(models.live, models.shadow, dispositions, scored)
        self._back_off(dispositions)
        _log_outcomes(dispositions)
        _emit_metrics(dispositions, ages, (time.perf_counter() - started) * 1000, shadowed)
        return {
            "batchItemFailures": [
                {"itemIdentifier": d.delivery.message_id} for d in dispositions if not d.outcome.acknowledged
            ]
        }

    def _claim_score_write(
        self, deliveries: list[Delivery], max_receive: int, model: Model
    ) -> tuple[list[Disposition], dict[int, ClaimedTask], dict[int, float], dict[int, AdFeatures], list[Due]]:
        """Claim, score, dispose of and write in one transaction, committed on return.

        Returns the dispositions, the claimed tasks, submit->completed seconds
        of the tasks this batch completed (for the latency metric) and the
        features of the ads it scored (for the shadow), and the webhook deliveries written to the
        outbox in the same transaction (one statement; none when no endpoint subscribes).
        """
        task_ids = [d.message.task_id for d in deliveries if d.message is not None]
        with self._store.transaction() as cur:
            claim = self._store.claim(cur, task_ids)
            scores, scored = self._score(claim.tasks, model)
            dispositions = plan_batch(
                deliveries,
                claim.tasks,
                claim.locked_elsewhere,
                scores,
                thresholds=model.thresholds,
                max_receive_count=max_receive,
                now_iso=utc_now_iso(),
            )
            write = BatchWrite(
                updates=[d.update for d in dispositions if d.update is not None],
                events=trail(dispositions, claim.tasks, set(claim.tasks) | claim.locked_elsewhere),
            )
            ages = self._store.write(cur, write, model_version=model.version)
            due = record_events(cur, task_events((u.task_id, u.status, u.decision) for u in write.updates))
        return dispositions, claim.tasks, ages, scored, due

    def _publish_safely(self, due: Sequence[Due]) -> None:
        """The webhook deliveries' messages; a failure is logged, never raised: the deliveries are
        committed, and the reconciler sends what has no message (docs/webhooks.md#nothing-is-lost)."""
        try:
            self._publish(due)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the tasks are done; their notices are not lost
            logger.warning("webhook deliveries not sent; the reconciler will", extra={"deliveries": len(due), "error": str(exc)})

    def _shadow(self, live: Model, shadow: Model, dispositions: Sequence[Disposition], scored: Mapping[int, AdFeatures]) -> int:
        """Score the batch's completed tasks with the shadow version and record its
        verdicts; -1 if that failed (logged, never raised: the tasks are done)."""
        done = [d.update for d in dispositions if d.update is not None and d.update.status == COMPLETED]
        done = [u for u in done if u.task_id in scored and u.probability is not None]
        if not done:
            return 0
        try:
            probabilities = shadow.predict_proba([scored[u.task_id] for u in done])
            rows = [
                ShadowVerdict(u.task_id, shadow.version, live.version, u.probability or 0.0, p, u.decision or "",
                              decide(p, shadow.thresholds))
                for u, p in zip(done, probabilities, strict=True)
            ]
            with self._store.transaction() as cur:
                self._store.add_shadow_verdicts(cur, rows)
        except Exception as exc:  # noqa: BLE001 - the shadow must never fail a task
            error = exc.message if isinstance(exc, ModerationError) else f"{type(exc).__name__}: {exc}"
            logger.warning("shadow scoring failed; the live verdicts stand",
                           extra={"shadow": shadow.version, "task_ids": [u.task_id for u in done], "error": error})
            return -1
        return len(rows)

    def _send_envelopes(self, dispositions: list[Disposition], claimed: Mapping[int, ClaimedTask]) -> list[Disposition]:
        """After the commit: send the envelopes, then record them as parked.

        A message whose envelope the DLQ did not store is not acknowledged
        (`unparked`): it comes back, and its envelope is sent then.
        """
        waiting = [(i, d.envelope) for i, d in enumerate(dispositions) if d.envelope is not None]
        if not waiting:
            return dispositions
        stored = self._queue.send_to_dlq([envelope for _, envelope in waiting])
        sent = {i for n, (i, _) in enumerate(waiting) if n in stored}
        self._record_parked(parked([dispositions[i] for i in sorted(sent)], claimed))
        return [unparked(d) if d.envelope is not None and i not in sent else d for i, d in enumerate(dispositions)]

    def _record_parked(self, rows: list[EventRow]) -> None:
        """Write the `dlq_parked` rows in a transaction of their own.

        Tried twice: the envelopes are already in the DLQ, and a row lost here
        costs a second envelope if the task's message ever comes back.
        """
        if not rows:
            return
        error = ""
        for _ in range(2):
            try:
                with self._store.transaction() as cur:
                    self._store.add_events(cur, rows)
                return
            except ModerationError as exc:
                error = exc.message
        logger.warning("envelopes parked but not recorded", extra={"task_ids": [r.task_id for r in rows], "error": error})

    @staticmethod
    def _score(claimed: Mapping[int, ClaimedTask], model: Model) -> tuple[dict[int, Score], dict[int, AdFeatures]]:
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
            return scores, valid
        try:
            probabilities = model.predict_proba(list(valid.values()))
            scores.update({tid: Score(probability=p) for tid, p in zip(valid, probabilities, strict=True)})
        except Exception:  # noqa: BLE001 - isolate the ad that breaks the model
            for tid, features in valid.items():
                try:
                    scores[tid] = Score(probability=model.predict_proba([features])[0])
                except Exception as exc:  # noqa: BLE001 - an unexpected error is transient
                    scores[tid] = Score(crashed=f"{type(exc).__name__}: {exc}")
        return scores, valid

    def _fail_exhausted(self, dispositions: list[Disposition]) -> None:
        """Last attempt of a whole-batch failure: fail the tasks if the DB lets us.

        The batch shares one error, so its reason differs only by attempt
        number: one UPDATE per distinct attempt (normally one for the batch).
        If the DB refuses, the reconciler fails them later as stuck.
        """
        by_attempt: dict[int, tuple[str, list[int]]] = {}
        for d in dispositions:
            if d.outcome is Outcome.EXHAUSTED and d.delivery.message is not None:
                reason = d.error or "failed"
                by_attempt.setdefault(d.delivery.attempt, (reason, []))[1].append(d.delivery.message.task_id)
        for attempt, (reason, task_ids) in by_attempt.items():
            try:
                self._store.fail_unfinished(task_ids, reason=reason, kind=TRANSIENT, attempt=attempt)
            except ModerationError as exc:
                logger.warning("could not mark tasks failed", extra={"task_ids": task_ids, "error": exc.message})
                return

    def _back_off(self, dispositions: list[Disposition]) -> None:
        changes = []
        for d in dispositions:
            if d.outcome.acknowledged:
                continue
            # An exhausted message goes straight back (visibility 0) so the
            # redrive policy moves it to the DLQ on the next receive.
            seconds = 0 if d.outcome is Outcome.EXHAUSTED else backoff_seconds(d.delivery.attempt, self._retry_base)
            changes.append(VisibilityChange(d.delivery.receipt_handle, seconds))
        if changes:
            self._queue.change_visibility(changes)


def _log_outcomes(dispositions: Sequence[Disposition]) -> None:
    """One line per batch for the completed tasks (their ids and request ids),
    one line per message for every other outcome.

    A line per completed message was ~40 % of the scorer's CPU at batch 100
    (Powertools formats each record); the happy path is summarised, anything
    unusual keeps its own line, and every task's request id is in the logs
    either way. POWERTOOLS_LOG_LEVEL=DEBUG adds a line per completed message.
    """
    completed = [d for d in dispositions if d.outcome is Outcome.COMPLETED]
    if completed:
        logger.info(
            "batch scored",
            extra={
                "outcome": Outcome.COMPLETED.value,
                "completed": len(completed),
                "batch_size": len(dispositions),
                "task_ids": [d.task_id for d in completed],
                "request_ids": [d.delivery.request_id for d in completed],
            },
        )
    for d in dispositions:
        if d.outcome is not Outcome.COMPLETED:
            _log_outcome(d, logger.info)
        elif logger.log_level <= logging.DEBUG:
            _log_outcome(d, logger.debug)


def _log_outcome(d: Disposition, log: Callable[..., None]) -> None:
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


def _emit_metrics(dispositions: Sequence[Disposition], ages: Mapping[int, float], elapsed_ms: float,
                  shadowed: int | None = None) -> None:
    """One EMF document per batch (chalicelib.metrics). `shadowed`: verdicts the
    shadow recorded, -1 if it failed, None without a shadow."""
    outcomes = [d.outcome for d in dispositions]
    metrics.emit(
        "score",
        {
            metrics.BATCH_SIZE: len(dispositions),
            metrics.COMPLETED: outcomes.count(Outcome.COMPLETED),
            metrics.RETRIED: outcomes.count(Outcome.RETRY),
            metrics.SENT_TO_DLQ: outcomes.count(Outcome.FAILED_PERMANENT) + outcomes.count(Outcome.EXHAUSTED),
            metrics.SHADOW_SCORED: max(shadowed or 0, 0),
            metrics.SHADOW_FAILED: int(shadowed == -1),
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
