"""The human review loop's use cases (issue 21; docs/reviews.md): the queue, claims, verdicts,
appeals, statements of reasons, and the backlog operators watch.

`verdict` is the one place a human decision is made: ReviewStore.decide commits it with its
webhook event (`moderation.reviewed` / `moderation.appeal_decided`) in the outbox, and the
deliveries are published after the commit (what is not, the reconciler sends).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from chalicelib import metrics
from chalicelib.domain import reviews as rules
from chalicelib.domain.events import Due
from chalicelib.errors import ReviewConflict, TaskNotFound
from chalicelib.logs import logger
from chalicelib.moderation.service import task_view
from chalicelib.storage.reviews import ReviewStore
from chalicelib.storage.tasks import TaskStore

APPEAL_MESSAGE = "Appeal accepted: a moderator other than the one who blocked the ad will decide it"


class ReviewService:
    def __init__(self, reviews: ReviewStore, tasks: TaskStore, *, lease_seconds: int = rules.DEFAULT_LEASE_SECONDS,
                 appeal_window_days: int = rules.DEFAULT_APPEAL_WINDOW_DAYS, platform: str = "ad-moderation",
                 publish: Callable[[Sequence[Due]], None] | None = None) -> None:
        self._reviews = reviews
        self._publish = publish  # the webhook deliveries a verdict wrote (issue 22)
        self._tasks = tasks
        self._lease = lease_seconds
        self._window = timedelta(days=appeal_window_days)
        self._platform = platform

    def queue(
        self, *, kind: str | None, after_id: int | None, limit: int, moderator: str
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of the queue, oldest first, and the id the next page continues above (None: last page)."""
        found = self._reviews.queue(kind=kind, after_id=after_id, limit=limit + 1, moderator=moderator)
        page = found[:limit]
        return page, page[-1]["task_id"] if len(found) > limit else None

    def claim(self, task_id: int, moderator: str) -> dict[str, Any]:
        claim = self._reviews.claim(task_id, moderator, self._lease)
        if claim is None:
            raise TaskNotFound(f"task {task_id} not found")
        logger.info("review claimed", extra={"task_id": task_id, "kind": claim["kind"], "moderator": moderator})
        return claim

    def verdict(self, task_id: int, moderator: str, decision: str, reason: str, note: str | None) -> dict[str, Any]:
        """The lease holder's verdict, committed; the task as the result route now shows it.
        Its webhook deliveries are published after the commit."""
        decided = self._reviews.decide(task_id, moderator, decision, rules.check_reason(reason), note)
        if decided is None:
            raise TaskNotFound(f"task {task_id} not found")
        kind, due = decided
        if due and self._publish is not None:
            try:
                self._publish(due)
            except Exception as exc:  # noqa: BLE001 - the verdict is committed; the reconciler sends its notices
                logger.warning("webhook deliveries not published; the reconciler sends them",
                               extra={"task_id": task_id, "error": f"{type(exc).__name__}: {exc}"})
        logger.info("review decided", extra={"task_id": task_id, "kind": kind, "decision": decision, "moderator": moderator})
        metrics.emit("api_handler", {metrics.REVIEWS_DECIDED: 1} if kind == rules.REVIEW else {metrics.APPEALS_DECIDED: 1})
        task = self._tasks.get_task(task_id)
        if task is None:  # purged by retention in between: the verdict stands
            raise TaskNotFound(f"task {task_id} not found")
        return task_view(task)

    def appeal(self, task_id: int, client: str, reason: str) -> dict[str, Any]:
        if not self._reviews.appeal(task_id, client, reason, self._window):
            raise TaskNotFound(f"task {task_id} not found")
        logger.info("appeal accepted", extra={"task_id": task_id, "client": client})
        metrics.emit("api_handler", {metrics.APPEALED: 1})
        return {"task_id": task_id, "appeal": rules.APPEAL_PENDING, "message": APPEAL_MESSAGE}

    def statement(self, task_id: int, *, owner: str | None) -> dict[str, Any]:
        task = self._reviews.statement_task(task_id, owner=owner)
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        if task["decision"] != rules.BLOCK or task["status"] != "completed":
            raise ReviewConflict("not_blocked", f"task {task_id} is not blocked (decision {task['decision']}): "
                                 "statements of reasons are for blocks")
        return rules.statement(_iso_dates(task), platform=self._platform)

    def expire_leases(self) -> list[int]:
        """The leases that ran out unused, given back with their trail event (the reconciler's sweep)."""
        expired = self._reviews.expire_leases()
        if expired:
            logger.info("review leases expired", extra={"tasks": len(expired), "task_ids": expired[:20]})
        return expired

    def backlog(self, *, emit_as: str | None = None) -> dict[str, Any]:
        """Queue depth and the oldest waiting age; with `emit_as` (the function's name) also as EMF
        metrics: ReviewQueueDepth (left out at 0, as every count is) and ReviewOldestAge in ms (0 when
        nothing waits). The reconciler emits them every run, so the template's alarm on the age needs
        no probe to be polled; GET /health/pipeline only reports them."""
        backlog = self._reviews.backlog()
        if emit_as is not None:
            metrics.emit(emit_as, {metrics.REVIEW_QUEUE_DEPTH: backlog["review"] + backlog["appeal"]},
                         milliseconds={metrics.REVIEW_OLDEST_AGE: [1000.0 * (backlog["oldest_seconds"] or 0.0)]})
        return backlog


def _iso_dates(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in task.items()}

