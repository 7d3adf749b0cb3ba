"""The API's use cases: score now, submit a task, read or list tasks, close an ad, health.

Each returns plain JSON-ready dicts; errors are domain errors (chalicelib.errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib import metrics
from chalicelib.domain.features import AdFeatures
from chalicelib.domain.tasks import PendingTask, Task, TaskEvent
from chalicelib.domain.verdicts import BLOCK, decide
from chalicelib.errors import AdNotFound, IdempotencyKeyMismatch, ModerationError, TaskNotFound, TransientError
from chalicelib.logs import logger
from chalicelib.queue import TaskQueue
from chalicelib.serving.aliases import Model, Models, as_models
from chalicelib.storage.tasks import TaskStore

ACCEPTED_MESSAGE = "Moderation request accepted"


# Scored by every health check: proves the loaded model answers, not only that it loaded.
PROBE_AD = AdFeatures(
    is_verified_seller=True, images_qty=4, category=3, name="Велосипед горный", description="Хорошее состояние, самовывоз"
)


class ModerationService:
    def __init__(
        self, store: TaskStore, queue: TaskQueue, model: Model | Models, *, max_age_seconds: int = 600,
        max_dlq_depth: int = 0
    ) -> None:
        self._store = store
        self._queue = queue
        self._models = as_models(model)
        # The pipeline's bounds (GET /health/pipeline; PIPELINE_MAX_AGE_SECONDS, PIPELINE_MAX_DLQ_DEPTH).
        self._max_age = max_age_seconds
        self._max_dlq = max_dlq_depth

    @property
    def model(self) -> Model:
        """The version serving now (the registry's `live` alias, else the packaged one)."""
        return self._models.snapshot().live

    def predict(self, features: AdFeatures) -> dict[str, Any]:
        model = self.model  # one version for the whole answer
        p = model.predict_proba([features])[0]
        decision = decide(p, model.thresholds)
        return {"is_violation": decision == BLOCK, "probability": p, "model_version": model.version, "decision": decision}

    def simple_predict(self, item_id: int) -> dict[str, Any]:
        ad = self._store.get_ad(item_id)
        if ad is None:
            raise AdNotFound(f"advertisement {item_id} not found")
        return self.predict(ad.features())

    def close(self, item_id: int) -> dict[str, Any]:
        """Close an ad (seed 002's POST /moderation/close): new moderation of it is
        404 from now on, and a task already queued for it fails permanently when
        the scorer reaches it. Nothing is cached per ad, so nothing else to drop.
        404 when there is no open ad with this id, as seed 002 answered."""
        if not self._store.close_ad(item_id):
            raise AdNotFound(f"advertisement {item_id} not found or already closed")
        logger.info("ad closed", extra={"item_id": item_id})
        return {"item_id": item_id, "status": "closed"}

    def submit(self, item_id: int, *, client: str, request_id: str | None = None) -> dict[str, Any]:
        """Store a pending task of `client`, then enqueue it.

        The row is committed before the send, so the scorer never sees a
        message for a task it cannot find. If the send fails the task is still
        accepted: the reconciler re-sends tasks whose enqueued_at stays NULL.
        """
        task_id = self._store.create_task(item_id, client=client, request_id=request_id)
        if task_id is None:
            raise AdNotFound(f"advertisement {item_id} not found")
        self._enqueue(PendingTask(task_id, item_id, request_id))
        metrics.emit("api_handler", {metrics.SUBMITTED: 1})
        return accepted_view(task_id)

    def submit_once(
        self, item_id: int, idempotency_key: str, *, client: str, request_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """submit under one of `client`'s Idempotency-Keys: (the 202 body, replayed).

        A key seen before answers with its first request's body and sends
        nothing; if that first send was lost, the reconciler re-sends it as for
        any task. A key first used for another item is a client bug: 409.
        """
        keyed = self._store.create_task_once(item_id, idempotency_key, client=client, request_id=request_id)
        if keyed.task_id is None:
            raise AdNotFound(f"advertisement {item_id} not found")
        if keyed.item_id != item_id:
            raise IdempotencyKeyMismatch(
                f"Idempotency-Key was already used for item_id {keyed.item_id}, not {item_id}: "
                "use a new key for each request"
            )
        if not keyed.replayed:
            self._enqueue(PendingTask(keyed.task_id, item_id, request_id))
            metrics.emit("api_handler", {metrics.SUBMITTED: 1})
        return accepted_view(keyed.task_id), keyed.replayed

    def submit_batch(self, item_ids: Sequence[int], *, client: str, request_id: str | None = None) -> dict[str, Any]:
        """Tasks for many ads: stored in one transaction, sent ten per
        SendMessageBatch, marked enqueued once sent. A send that fails is left
        to the reconciler (the tasks stay accepted), as in submit.

        One result per requested item, in request order.
        """
        task_ids = self._store.create_tasks(item_ids, client=client, request_id=request_id)
        created = [PendingTask(t, i, request_id) for t, i in zip(task_ids, item_ids, strict=True) if t is not None]
        if created:
            sent = self._send_created(created)
            if len(sent) < len(created):
                logger.warning(
                    "batch stored but partly not enqueued; the reconciler will re-send the rest",
                    extra={"tasks": len(created), "sent": len(sent), "request_id": request_id},
                )
            metrics.emit("api_handler", {metrics.SUBMITTED: len(created)})
        items: list[dict[str, Any]] = [
            {"item_id": i, "task_id": t, "status": "pending"}
            if t is not None
            else {"item_id": i, "error": {"code": AdNotFound.code, "message": f"advertisement {i} not found"}}
            for t, i in zip(task_ids, item_ids, strict=True)
        ]
        return {"items": items, "accepted": len(created), "rejected": len(items) - len(created)}

    def _send_created(self, created: list[PendingTask]) -> dict[int, str]:
        sent = self._queue.send_tasks_best_effort(created)
        if sent:
            try:
                self._store.mark_enqueued(sent)
            except ModerationError as exc:
                # Sent but not marked: the reconciler re-sends them; the scorer
                # takes the duplicates as duplicates.
                logger.warning("could not mark the batch enqueued", extra={"error": exc.message})
        return sent

    def _enqueue(self, task: PendingTask) -> None:
        """Send, then record the send. Neither failure un-accepts the task."""
        context = {"task_id": task.task_id, "item_id": task.item_id, "request_id": task.request_id}
        try:
            message_id = self._queue.send_task(task)
        except ModerationError as exc:
            logger.warning(
                "task stored but not enqueued; the reconciler will re-send it", extra={**context, "error": exc.message}
            )
            try:
                self._store.mark_send_failed([task.task_id], exc.message)
            except ModerationError:
                pass  # enqueued_at is still NULL: the reconciler finds it either way
            return
        try:
            self._store.mark_enqueued({task.task_id: message_id})
        except ModerationError as exc:
            # Sent but not marked: the reconciler sends it once more and the
            # scorer acknowledges the duplicate.
            logger.warning("task enqueued but not marked", extra={**context, "error": exc.message})

    def result(self, task_id: int, *, owner: str | None) -> dict[str, Any]:
        """The task, if it is `owner`'s (None: anyone's). Another client's task is the
        same 404 as one that does not exist: nothing tells them apart."""
        task = self._store.get_task(task_id, owner=owner)
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task_view(task)

    def tasks(
        self, *, item_id: int | None, status: str | None, before_id: int | None, limit: int, owner: str | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of tasks, newest first, as the result route shows each, and the
        id the next page continues below (None: this is the last page). One query:
        it reads one task more than the page, to know whether another page follows."""
        found = self._store.list_tasks(item_id=item_id, status=status, before_id=before_id, limit=limit + 1, owner=owner)
        page = found[:limit]
        return [task_view(t) for t in page], page[-1].task_id if len(found) > limit else None

    def events(self, task_id: int, *, owner: str | None) -> dict[str, Any]:
        events = self._store.task_events(task_id, owner=owner)
        if events is None:
            raise TaskNotFound(f"task {task_id} not found")
        return {"task_id": task_id, "events": [event_view(e) for e in events]}

    def health(self) -> dict[str, Any]:
        """The service's health, for GET /health and GET /health/pipeline.

        One query (the oldest unfinished task's age, which also proves the
        database answers), one GetQueueAttributes (the DLQ's depth, which also
        proves SQS answers) and one score of PROBE_AD: cheap enough to poll, and
        never what overloads a sick database. `status` is `unavailable` when the
        API cannot work (a dependency down), `degraded` when it can but tasks are
        not being completed in time or the DLQ holds messages (`pipeline.reasons`).
        """
        checks: dict[str, Any] = {}
        age, dlq = None, None
        try:
            age = self._store.oldest_unfinished_seconds()
            checks["database"] = {"ok": True}
        except TransientError as exc:
            checks["database"] = {"ok": False, "error": exc.message}
        try:
            dlq = self._queue.dlq_depth()
            checks["queue"] = {"ok": True, "depth": {self._queue.dlq_name: dlq}}
        except TransientError as exc:
            checks["queue"] = {"ok": False, "error": exc.message}
        checks["model"] = self._probe_model() | self._model_registry()
        down = [name for name, c in checks.items() if not c["ok"]]
        reasons = self._pipeline_reasons(age, dlq, down)
        refused = checks["model"].get("refused")
        body: dict[str, Any] = {
            "status": "unavailable" if down else "degraded" if reasons or refused else "ok",
            "checks": checks,
            "pipeline": {
                "ok": not reasons,
                "oldest_unfinished_seconds": age,
                "max_unfinished_seconds": self._max_age,
                "dlq_depth": dlq,
                "max_dlq_depth": self._max_dlq,
                "reasons": reasons,
            },
        }
        if down:
            body.update(code="dependency_unavailable", message=f"down: {', '.join(down)}")
        elif reasons:
            body.update(code="pipeline_degraded", message="; ".join(reasons))
        elif refused:
            serving = checks["model"]["version"]
            also = ("the copy verified when it was loaded keeps serving" if refused["version"] == serving
                    else f"{serving} serves")
            body.update(code="model_refused",
                        message=f"model version {refused['version']} refused: {refused['reason']}; {also}")
        return body

    def _model_registry(self) -> dict[str, Any]:
        """Which version the registry's `live` names and the latest refusal
        (chalicelib/serving/aliases.py): a refused version degrades /health, never
        fails it, since the version serving still answers (docs/models.md)."""
        status = getattr(self._models, "status", None)
        if status is None:
            return {}
        state = status()
        if state.get("registry") is None:
            return {"registry": None}
        refused = state.get("refused")
        return {"registry": state["registry"], "live_alias": state.get("aliases", {}).get("live"),
                "refused": {"version": refused["version"], "reason": refused["reason"]} if refused else None,
                "check_seconds": state.get("check_seconds")}

    def _probe_model(self) -> dict[str, Any]:
        """Score the fixed probe ad: the model is ok if it answers a probability in [0, 1]."""
        model = self.model
        version = model.version
        try:
            p = model.predict_proba([PROBE_AD])[0]
        except Exception as exc:  # noqa: BLE001 - a model that cannot score is down, whatever it raised
            return {"ok": False, "version": version, "error": f"probe ad not scored: {type(exc).__name__}: {exc}"}
        if not 0.0 <= p <= 1.0:  # NaN fails this too
            return {"ok": False, "version": version, "error": f"probe ad scored {p!r}, not a probability"}
        return {"ok": True, "version": version, "probability": p}

    def _pipeline_reasons(self, age: float | None, dlq: int | None, down: list[str]) -> list[str]:
        reasons = []
        if "database" in down:
            reasons.append("database unavailable: cannot tell whether tasks are being completed")
        elif age is not None and age > self._max_age:
            reasons.append(
                f"the oldest unfinished task is {age:.0f} s old (bound {self._max_age} s): is the scorer running?"
            )
        if "queue" in down:
            reasons.append(f"SQS unavailable: cannot read the depth of {self._queue.dlq_name}")
        elif dlq is not None and dlq > self._max_dlq:
            reasons.append(f"{dlq} message(s) in {self._queue.dlq_name} (bound {self._max_dlq}): see `make dlq`")
        return reasons


def accepted_view(task_id: int) -> dict[str, Any]:
    return {"task_id": task_id, "status": "pending", "message": ACCEPTED_MESSAGE}


def task_view(task: Task) -> dict[str, Any]:
    """The moderation_result response: the seeds' fields first, then ours."""
    return {
        "task_id": task.task_id,
        "status": task.status,
        "is_violation": task.is_violation,
        "probability": task.probability,
        "error_message": task.error_message,
        "item_id": task.item_id,
        "model_version": task.model_version,
        "decision": task.decision,
        "attempts": task.attempts,
        # Diagnostics: why it failed, what the last retry hit, when it started.
        "error_kind": task.error_kind,
        "last_error": task.last_error,
        "created_at": _iso(task.created_at),
        "started_at": _iso(task.started_at),
        "processed_at": _iso(task.processed_at),
        # The review loop (docs/reviews.md): the final decision's author, the model's own beside it.
        "decided_by": task.decided_by or ("model" if task.decision is not None else None),
        "model_decision": task.model_decision or task.decision,
        "reviewed_by": task.reviewed_by,
        "review_reason": task.review_reason,
        "reviewed_at": _iso(task.reviewed_at),
        "appeal": task.appeal,
    }


def event_view(event: TaskEvent) -> dict[str, Any]:
    return {
        "at": _iso(event.at),
        "kind": event.kind,
        "attempt": event.attempt,
        "outcome": event.outcome,
        "error": event.error,
        "message_id": event.message_id,
        "request_id": event.request_id,
        "actor": event.actor,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
