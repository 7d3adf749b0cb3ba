"""SQS: the webhooks queue and its dead-letter queue (issue 22; docs/webhooks.md).

A message names one delivery and the attempts already made, `{"delivery_id", "attempt"}`; the
sender ignores a message whose count the delivery has moved past (a duplicate). Retries within
SQS's 15 minutes are held by DelaySeconds; longer ones wait in the database for the reconciler.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.events import Due
from chalicelib.domain.webhooks import SQS_MAX_DELAY
from chalicelib.logs import logger

T = TypeVar("T")


SQS_BATCH = 10


def chunks(items: Sequence[T], size: int = SQS_BATCH) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class WebhookQueue:
    def __init__(self, sqs: Any, *, queue_name: str, dlq_name: str, queue_url: str | None = None,
                 dlq_url: str | None = None) -> None:
        self._sqs = sqs
        self._names = {"queue": queue_name, "dlq": dlq_name}
        self._urls = {k: v for k, v in (("queue", queue_url), ("dlq", dlq_url)) if v}

    def url(self, which: str) -> str:
        if which not in self._urls:
            self._urls[which] = self._sqs.get_queue_url(QueueName=self._names[which])["QueueUrl"]
        return self._urls[which]

    def send(self, due: Sequence[Due]) -> set[int]:
        """Send one message per delivery; the delivery ids SQS accepted. Never raises: what was
        not sent stays in the outbox for the reconciler."""
        sent: set[int] = set()
        for chunk in chunks(due):
            entries = [{"Id": str(d.delivery_id),
                        "MessageBody": json.dumps({"delivery_id": d.delivery_id, "attempt": d.attempts}),
                        "DelaySeconds": max(0, min(d.delay, SQS_MAX_DELAY))} for d in chunk]
            try:
                resp = self._sqs.send_message_batch(QueueUrl=self.url("queue"), Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                logger.warning("webhook queue send failed", extra={"deliveries": len(chunk), "error": str(exc)})
                continue
            sent.update(int(ok["Id"]) for ok in resp.get("Successful", []))
        return sent

    def park(self, envelopes: Sequence[dict[str, Any]]) -> bool:
        """Exhausted deliveries, as envelopes in the webhooks DLQ (`make dlq ARGS="--queue webhooks --dlq webhooks_dlq list"`)."""
        ok = True
        for n, chunk in enumerate(chunks(envelopes)):
            entries = [{"Id": str(n * SQS_BATCH + i), "MessageBody": json.dumps(e, default=str)} for i, e in enumerate(chunk)]
            try:
                resp = self._sqs.send_message_batch(QueueUrl=self.url("dlq"), Entries=entries)
                ok = ok and not resp.get("Failed")
            except (BotoCoreError, ClientError) as exc:
                logger.warning("webhook DLQ send failed", extra={"error": str(exc)})
                ok = False
        return ok
