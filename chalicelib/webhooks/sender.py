"""The webhook sender (issue 22; docs/webhooks.md): one SQS batch of deliveries, each attempted
once, its outcome recorded, its next attempt scheduled.

    message -> delivery + endpoint -> sign -> POST (checked address, 15 s) -> record -> schedule

Every message is acknowledged once its attempt is recorded: the retries are the sender's own
schedule (Svix's, chalicelib/domain/webhooks.py), not SQS's redrive. A step SQS can hold
(DelaySeconds <= 900 s) is a delayed message sent now; a longer one waits in the database and
the reconciler sends it when it is nearly due (`sweep`). Only a batch the sender cannot record
(no database) is reported in `batchItemFailures`; after the queue's maxReceiveCount such a
message goes to the webhooks DLQ. A delivery whose schedule is used up is `exhausted`: its
attempts show it, and its envelope is parked in the DLQ (`make dlq ARGS="--queue webhooks --dlq webhooks_dlq list"`).

Deliveries of a batch are attempted in parallel (one slow receiver does not hold up nine).
Nothing here logs a secret, a signature or a body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from chalicelib import metrics, outbound
from chalicelib.domain.webhooks import (
    ENDPOINT_DISABLED,
    SQS_MAX_DELAY,
    Due,
    Verdict,
    judge,
    next_delay,
    retry_after_seconds,
    sign,
)
from chalicelib.errors import ModerationError
from chalicelib.logs import logger
from chalicelib.sealing import Sealer
from chalicelib.storage.webhooks import Delivery, WebhookStore
from chalicelib.webhook_queue import WebhookQueue
from chalicelib.webhooks.settings import WebhookSettings

SWEEP_LIMIT = 1000
OLDEST_UNDELIVERED = "WebhookOldestUndeliveredSeconds"


class Sender:
    def __init__(self, store: WebhookStore, queue: WebhookQueue, sealer: Sealer, settings: WebhookSettings) -> None:
        self._store, self._queue, self._sealer, self._settings = store, queue, sealer, settings

    @property
    def store(self) -> WebhookStore:
        return self._store

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    def handle(self, records: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
        wanted: list[tuple[str, int, int]] = []
        for record in records:
            try:
                body = json.loads(record["body"])
                wanted.append((str(record["messageId"]), int(body["delivery_id"]), int(body["attempt"])))
            except (KeyError, TypeError, ValueError):
                logger.warning("malformed webhook message dropped", extra={"message_id": record.get("messageId")})
        try:
            deliveries = self._store.deliveries([d for _, d, _ in wanted])
        except ModerationError as exc:
            logger.warning("webhook batch not attempted", extra={"error": exc.message})
            return {"batchItemFailures": [{"itemIdentifier": m} for m, _, _ in wanted]}
        todo = [(m, deliveries[d]) for m, d, a in wanted
                if d in deliveries and deliveries[d].status == "pending" and deliveries[d].attempts == a]
        failed: list[str] = []
        if todo:
            with ThreadPoolExecutor(max_workers=len(todo)) as pool:
                for message_id, ok in zip([m for m, _ in todo], pool.map(self._attempt_safely, [d for _, d in todo]),
                                          strict=True):
                    if not ok:
                        failed.append(message_id)
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

    def _attempt_safely(self, delivery: Delivery) -> bool:
        """False (the message comes back) when the attempt could not be recorded: the database down,
        or the endpoint deleted meanwhile (then the next receive finds no delivery and drops it)."""
        try:
            self.attempt(delivery)
            return True
        except ModerationError as exc:
            logger.warning("webhook attempt not recorded", extra={"delivery_id": delivery.delivery_id, "error": exc.message})
        except Exception as exc:  # noqa: BLE001 - one delivery must not fail its batch-mates
            logger.warning("webhook attempt failed", extra={"delivery_id": delivery.delivery_id,
                                                            "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        return False

    def attempt(self, d: Delivery) -> None:
        if not d.enabled:
            self._store.drop(d.delivery_id, d.attempts, "the endpoint is disabled")
            return
        keys = [self._sealer.open(d.secret)] + ([self._sealer.open(d.previous_secret)] if d.previous_secret else [])
        headers = sign(d.event_id, d.body, keys)
        answer = outbound.post(d.url, d.body.encode(), headers, timeout_seconds=self._settings.timeout_seconds,
                               allow_private=self._settings.allow_private)
        verdict = judge(answer.status_code)
        delay: int | None = None
        if verdict is Verdict.DELIVERED:
            status = "delivered"
        elif verdict is Verdict.GONE:
            status = "dropped"
        else:
            delay = next_delay(self._settings.schedule, d.attempts + 1, jitter=self._settings.jitter,
                               retry_after=retry_after_seconds(answer.status_code, answer.retry_after))
            status = "pending" if delay is not None else "exhausted"
        error = answer.error or (None if status == "delivered" else f"HTTP {answer.status_code}")
        disabled, notices = self._store.record_attempt(
            d, status=status, status_code=answer.status_code, latency_ms=answer.latency_ms, error=error,
            outcome=verdict.value if status != "exhausted" else "exhausted", delay=delay,
            disable_after_seconds=self._settings.disable_after_seconds, gone=verdict is Verdict.GONE,
            disabled_event=ENDPOINT_DISABLED)
        extra = {"delivery_id": d.delivery_id, "event_id": d.event_id, "endpoint_id": d.endpoint_id,
                 "attempt": d.attempts + 1, "status_code": answer.status_code, "latency_ms": answer.latency_ms,
                 "outcome": status, "error": error}
        logger.info("webhook attempt", extra=extra)
        if disabled:
            logger.warning("webhook endpoint disabled", extra={"endpoint_id": d.endpoint_id, "client": d.client_id})
        if status == "pending" and delay is not None and delay <= SQS_MAX_DELAY:
            self._send([Due(d.delivery_id, d.attempts + 1, delay)])
        if status == "exhausted":
            # The scorer's envelope shape, so `make dlq list` reads it; a redrive re-sends nothing
            # (the delivery is not pending): the replay route delivers it again.
            self._queue.park([{"original_message": {"delivery_id": d.delivery_id, "attempt": d.attempts + 1},
                               "error": error, "error_kind": "exhausted", "retry_count": d.attempts + 1,
                               "delivery_id": d.delivery_id, "event_id": d.event_id, "event_type": d.event_type,
                               "endpoint_id": d.endpoint_id, "client": d.client_id, "attempts": d.attempts + 1,
                               "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}])
        if notices:
            self._send(notices)

    def _send(self, due: Sequence[Due]) -> None:
        """Send now; what SQS did not take is left to the reconciler (its message marked unsent)."""
        sent = self._queue.send(due)
        missing = [d.delivery_id for d in due if d.delivery_id not in sent]
        if missing:
            try:
                self._store.unsent(missing)
            except ModerationError:
                pass  # still pending: the reconciler finds it once it is stale

    def publish(self, due: Sequence[Due]) -> None:
        """After the commit that wrote them: send the new deliveries' messages."""
        if due:
            self._send(due)

    def sweep(self) -> int:
        """The reconciler's part: send what is due and has no message. Returns how many."""
        due = self._store.claim_due(stale_seconds=self._settings.stale_seconds, limit=SWEEP_LIMIT)
        self._send(due)
        # What the alarm on the oldest undelivered event reads (infra/resources.json WebhookOldestUndeliveredAlarm).
        metrics.emit("reconcile", {OLDEST_UNDELIVERED: self._store.oldest_pending_seconds()})
        return len(due)
