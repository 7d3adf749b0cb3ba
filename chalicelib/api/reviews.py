"""The HTTP side of the review loop (issue 21; docs/reviews.md): the queue, claims, verdicts,
appeals, statements of reasons, and the moderator console's files. app.py's routes are one
line each into here; the rules are chalicelib/domain/reviews.py, the use cases
chalicelib/moderation/reviews.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from chalice import Response
from chalice.app import Request

from chalicelib import deps
from chalicelib.api import auth
from chalicelib.api.models import DEFAULT_PAGE, MAX_PAGE, TaskResult
from chalicelib.api.requests import _optional, decode_cursor, echo, encode_cursor, parse_body, parse_id, require_json
from chalicelib.api.responses import handle_errors, reply, static_file
from chalicelib.api.review_models import (
    REVIEW_KINDS,
    AppealAccepted,
    AppealRequest,
    Claim,
    ReviewPage,
    Statement,
    VerdictRequest,
)
from chalicelib.config import get_settings
from chalicelib.domain.clients import MODERATE, Caller
from chalicelib.errors import InsufficientScope, InvalidParameter, TaskNotFound

CONSOLE = Path(__file__).resolve().parent / "static" / "console"
# The console's files (chalicelib/api/static/console/), and their types.
CONSOLE_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "application/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


@handle_errors
def queue(request: Request) -> Response:
    params = request.query_params
    kind = _optional(params, "kind")
    if kind is not None and kind not in REVIEW_KINDS:
        raise InvalidParameter("kind", f"kind must be one of {', '.join(REVIEW_KINDS)}, got {echo(kind)}")
    limit, cursor = _optional(params, "limit"), _optional(params, "cursor")
    page, last = deps.reviews().queue(
        kind=kind,
        after_id=None if cursor is None else decode_cursor(cursor),
        limit=DEFAULT_PAGE if limit is None else parse_id(limit, "limit", maximum=MAX_PAGE),
        moderator=auth.client(request),
    )
    return reply(ReviewPage, {"tasks": page, "next_cursor": None if last is None else encode_cursor(last)})


def _moderator(request: Request, task_id: int) -> str:
    """The moderator acting on `task_id`. A client without `moderate` learns nothing of tasks that
    are not its own: another client's task is the 404 of one that does not exist; its own, 403."""
    who: Caller = auth.caller(request)
    if MODERATE in who.scopes:
        return who.client
    if deps.task_store().get_task(task_id, owner=who.owner) is None:
        raise TaskNotFound(f"task {task_id} not found")
    raise InsufficientScope(f"client {who.client!r} needs scope moderate to claim or decide a review")


@handle_errors
def claim(request: Request, task_id: str) -> Response:
    tid = parse_id(task_id, "task_id")
    return reply(Claim, deps.reviews().claim(tid, _moderator(request, tid)))


@handle_errors
def verdict(request: Request, task_id: str) -> Response:
    tid = parse_id(task_id, "task_id")
    moderator = _moderator(request, tid)
    require_json(request.headers)
    body = parse_body(request.raw_body, get_settings().max_body_bytes, VerdictRequest, "verdict")
    return reply(TaskResult, deps.reviews().verdict(tid, moderator, body.decision, body.reason, body.note))


@handle_errors
def appeal(request: Request) -> Response:
    require_json(request.headers)
    body = parse_body(request.raw_body, get_settings().max_body_bytes, AppealRequest, "appeal")
    return reply(AppealAccepted, deps.reviews().appeal(body.task_id, auth.client(request), body.reason), 202)


@handle_errors
def statement(request: Request, task_id: str) -> Response:
    return reply(Statement, deps.reviews().statement(parse_id(task_id, "task_id"), owner=auth.owner(request)))


def backlog() -> Mapping[str, object] | None:
    """The review backlog for GET /health/pipeline; None when the database cannot say (the
    database check reports that; the backlog never fails the probe)."""
    from chalicelib.errors import ModerationError

    try:
        return deps.reviews().backlog()
    except ModerationError:
        return None


@handle_errors
def console_asset(name: str) -> Response:
    return static_file(CONSOLE, CONSOLE_ASSETS, name, "no-cache")
