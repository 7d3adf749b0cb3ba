"""The API's use cases: score now, submit a task, read a task, health.

Each returns plain JSON-ready dicts; errors are domain errors (chalicelib.errors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib import metrics
from chalicelib.errors import AdNotFound, ModerationError, TaskNotFound, TransientError
from chalicelib.features import AdFeatures
from chalicelib.logs import logger
from chalicelib.queue import TaskQueue
from chalicelib.storage import ModerationStore, PendingTask, Task, TaskEvent

if TYPE_CHECKING:
    from chalicelib.scoring import Model

ACCEPTED_MESSAGE = "Moderation request accepted"


class ModerationService:
    def __init__(self, store: ModerationStore, queue: TaskQueue, model: Model) -> None:
        self._store = store
        self._queue = queue
        self._model = model

    def predict(self, features: AdFeatures) -> dict[str, Any]:
        p = self._model.predict_proba([features])[0]
        return {"is_violation": p >= self._model.threshold, "probability": p, "model_version": self._model.version}

    def simple_predict(self, item_id: int) -> dict[str, Any]:
        ad = self._store.get_ad(item_id)
        if ad is None:
            raise AdNotFound(f"advertisement {item_id} not found")
        return self.predict(ad.features())

    def submit(self, item_id: int, *, request_id: str | None = None) -> dict[str, Any]:
        """Store a pending task, then enqueue it.

        The row is committed before the send, so the scorer never sees a
        message for a task it cannot find. If the send fails the task is still
        accepted: the reconciler re-sends tasks whose enqueued_at stays NULL.
        """
        task_id = self._store.create_task(item_id, request_id=request_id)
        if task_id is None:
            raise AdNotFound(f"advertisement {item_id} not found")
        self._enqueue(PendingTask(task_id, item_id, request_id))
        metrics.emit("api_handler", {metrics.SUBMITTED: 1})
        return {"task_id": task_id, "status": "pending", "message": ACCEPTED_MESSAGE}

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

    def result(self, task_id: int) -> dict[str, Any]:
        task = self._store.get_task(task_id)
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task_view(task)

    def events(self, task_id: int) -> dict[str, Any]:
        events = self._store.task_events(task_id)
        if events is None:
            raise TaskNotFound(f"task {task_id} not found")
        return {"task_id": task_id, "events": [event_view(e) for e in events]}

    def health(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            self._store.ping()
            checks["database"] = {"ok": True}
        except TransientError as exc:
            checks["database"] = {"ok": False, "error": exc.message}
        try:
            checks["queue"] = {"ok": True, "depth": self._queue.depths()}
        except TransientError as exc:
            checks["queue"] = {"ok": False, "error": exc.message}
        checks["model"] = {"ok": True, "version": self._model.version}
        down = [name for name, c in checks.items() if not c["ok"]]
        body: dict[str, Any] = {"status": "ok" if not down else "unavailable", "checks": checks}
        if down:
            body.update(code="dependency_unavailable", message=f"down: {', '.join(down)}")
        return not down, body


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
        "attempts": task.attempts,
        # Diagnostics: why it failed, what the last retry hit, when it started.
        "error_kind": task.error_kind,
        "last_error": task.last_error,
        "created_at": _iso(task.created_at),
        "started_at": _iso(task.started_at),
        "processed_at": _iso(task.processed_at),
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
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
