"""The route table: every route's summary, parameters, request model and replies
by status, as data. chalicelib/api/openapi.py renders it, with the models of
chalicelib/api/models.py and Chalice's own route table, into the OpenAPI
document served at GET /openapi.json; tests/unit/test_contract.py holds every
route of app.py to exactly one entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from chalicelib.api.models import (
    CURSOR_PATTERN,
    DEFAULT_PAGE,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_PAGE,
    REPLAYED_HEADER,
    TASK_STATUSES,
    Accepted,
    AdRequest,
    BatchAccepted,
    BatchRequest,
    Closed,
    Error,
    GatewayError,
    Health,
    LegacyAdRequest,
    Prediction,
    TaskEvents,
    TaskPage,
    TaskResult,
)
from chalicelib.domain.clients import ADMIN, CLOSE, CONTRACT_HEADER, CONTRACTS, SUBMIT


# NamedTuples, not dataclasses: a tenth of the class-creation cost, and this
# module is on the API function's cold path.
class Param(NamedTuple):
    name: str
    location: Literal["query", "path", "header"]
    description: str
    # JSON Schema of the value; None: an id (integer, 1..2^63-1).
    schema: Mapping[str, Any] | None = None
    required: bool = True


class Reply(NamedTuple):
    description: str
    model: type[BaseModel] | tuple[type[BaseModel], ...] | None = None  # a tuple: any of them
    media_type: str = "application/json"
    # name -> (description, always sent)
    headers: Mapping[str, tuple[str, bool]] = MappingProxyType({})


class Operation(NamedTuple):
    operation_id: str
    summary: str
    tag: str
    replies: Mapping[int, Reply]
    description: str = ""
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None


class Alias(NamedTuple):
    """A root path kept for the older FastAPI clients: documented as deprecated."""

    method: str
    path: str


ITEM_ID = Param("item_id", "query", "The ad (advertisements.id)")
TASK_ID = Param("task_id", "path", "The task id returned by async_predict")
IDEMPOTENCY_KEY = Param(
    IDEMPOTENCY_KEY_HEADER,
    "header",
    "Optional. The same key with the same item_id returns the original task (202, `Idempotent-Replayed: true`) and "
    "sends nothing new; with another item_id it is a 409. Keys are kept at least 24 h. Use a fresh random value "
    "(a UUID) per logical request. Keys are your client's own: another client's identical key is another request.",
    schema={"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX, "pattern": IDEMPOTENCY_KEY_PATTERN},
    required=False,
)

ITEM_FILTER = Param("item_id", "query", "Only this ad's tasks", required=False)
STATUS_FILTER = Param(
    "status", "query", "Only tasks in this status", schema={"type": "string", "enum": list(TASK_STATUSES)}, required=False
)
LIMIT = Param(
    "limit",
    "query",
    f"Tasks per page ({DEFAULT_PAGE} if left out)",
    schema={"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
    required=False,
)
CURSOR = Param(
    "cursor",
    "query",
    "Where the page starts: `next_cursor` of the previous page, unchanged (opaque)",
    schema={"type": "string", "pattern": CURSOR_PATTERN},
    required=False,
)

_RETRY_AFTER = {"Retry-After": ("seconds to wait before retrying", True)}


def _error(description: str) -> Reply:
    return Reply(description, Error)


BAD_PARAMETER = _error("`invalid_parameter`: a parameter is missing, not an integer, not positive, or beyond 64 bits")
BAD_BODY = _error("`invalid_body`: the body is not JSON, not an object, or a field is invalid (`errors` lists them)")
TOO_LARGE = _error("`payload_too_large`: the body is over MAX_BODY_BYTES (16 KiB)")
UNSUPPORTED = _error("`unsupported_media_type`: the body is not `application/json`")
UNAVAILABLE = Reply("`dependency_unavailable`: PostgreSQL is down; nothing was stored", Error, headers=_RETRY_AFTER)
AD_NOT_FOUND = _error("`ad_not_found`: no such ad, or it is closed")

# What any route may answer besides its own replies; chalicelib/api/openapi.py adds them to every
# operation (docs/performance.md#under-overload-make-load-profileoverload). The deployed API: API
# Gateway's throttles (the stage's rate, a client's usage plan) and its 503 for a request the API
# function did not answer (throttled at its reserved concurrency, failed, timed out). `make run`:
# its bound on requests in flight.
THROTTLED = Reply(
    "API Gateway (the deployed API): `throttled` by the stage's or the client's usage plan's rate limit "
    "(Retry-After: 1), or `quota_exceeded`, the client's daily quota (Retry-After: 3600)",
    GatewayError,
    headers=_RETRY_AFTER,
)
SHED = ("`overloaded`: `make run` had too many requests in flight (Retry-After: 1); or, on the deployed API, "
        "`service_unavailable`: the API function did not answer, e.g. at its reserved concurrency (Retry-After: 1). "
        "Nothing was done")
NOT_SHED = "on the deployed API, `service_unavailable`: the API function did not answer (Retry-After: 1)"
# Never refused for load by `make run` (devstack/chalice_local.py): an overloaded API is not a broken one.
NEVER_SHED = frozenset({"/health", "/health/pipeline"})
TASK_NOT_FOUND = _error("`task_not_found`: no such task")

TAG_MODERATION = "moderation"
TAG_TASKS = "tasks"
TAG_SERVICE = "service"

# (method, path) -> operation. Every route of app.py has exactly one entry here
# or in ALIASES (tests/unit/test_contract.py). The 403 of API Gateway on routes that
# need the API key, and the 429/503 every route may answer, are added by openapi.py.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/moderation/predict"): Operation(
        "predict",
        "Score the ad in the body, synchronously",
        TAG_MODERATION,
        {
            200: Reply("The verdict", Prediction),
            400: BAD_BODY,
            413: TOO_LARGE,
            415: UNSUPPORTED,
        },
        description="Nothing is stored; the ad does not need to exist.",
        body=AdRequest,
    ),
    ("POST", "/moderation/simple_predict"): Operation(
        "simple_predict",
        "Score a stored ad, synchronously",
        TAG_MODERATION,
        {
            200: Reply("The verdict", Prediction),
            400: BAD_PARAMETER,
            404: AD_NOT_FOUND,
            503: UNAVAILABLE,
        },
        params=(ITEM_ID,),
    ),
    ("POST", "/moderation/async_predict"): Operation(
        "async_predict",
        "Create a moderation task for a stored ad",
        TAG_MODERATION,
        {
            202: Reply(
                "Accepted: the task is stored and queued (if the send to SQS failed, the task is still accepted and "
                "the reconciler sends it). Poll GET /moderation/moderation_result/{task_id}.",
                Accepted,
                headers={REPLAYED_HEADER: ("`true` when this is the original answer to a repeated Idempotency-Key", False)},
            ),
            400: Reply("`invalid_parameter`: bad item_id or Idempotency-Key (`parameter` names which)", Error),
            404: AD_NOT_FOUND,
            409: _error("`idempotency_key_mismatch`: the Idempotency-Key was already used for another item_id"),
            503: UNAVAILABLE,
        },
        params=(ITEM_ID, IDEMPOTENCY_KEY),
    ),
    ("POST", "/moderation/async_predict/batch"): Operation(
        "async_predict_batch",
        "Create moderation tasks for up to 100 stored ads",
        TAG_MODERATION,
        {
            202: Reply(
                "Accepted: one result per requested item, in request order: a task, or an `ad_not_found` error for "
                "that item. The tasks are stored in one transaction and queued with SendMessageBatch; a failed send "
                "is left to the reconciler, as for a single submit.",
                BatchAccepted,
            ),
            400: Reply("`invalid_body`: not JSON, not an object, `item_ids` missing, empty, over 100 items, or an id "
                       "that is not a positive 64-bit integer", Error),
            413: TOO_LARGE,
            415: UNSUPPORTED,
            503: UNAVAILABLE,
        },
        body=BatchRequest,
    ),
    ("POST", "/moderation/close"): Operation(
        "close",
        "Close an ad: it is not moderated any more",
        TAG_MODERATION,
        {
            200: Reply("Closed", Closed),
            400: BAD_PARAMETER,
            404: _error("`ad_not_found`: no such ad, or it is already closed"),
            503: UNAVAILABLE,
        },
        description="The course project's (seed 002) route. New moderation of a closed ad is 404 `ad_not_found`, "
        "and a task already queued for it ends `failed` (`error_kind` permanent). Nothing is cached per ad, so "
        "closing drops nothing else.",
        params=(ITEM_ID,),
    ),
    ("GET", "/moderation/moderation_result/{task_id}"): Operation(
        "moderation_result",
        "A task's state and verdict",
        TAG_TASKS,
        {
            200: Reply(
                "The task. Statuses: pending → processing → completed | failed. A task failed for a transient reason "
                "(`error_kind` transient or stuck) may still become completed after a redrive from the DLQ.",
                TaskResult,
            ),
            400: BAD_PARAMETER,
            404: TASK_NOT_FOUND,
            503: UNAVAILABLE,
        },
        params=(TASK_ID,),
    ),
    ("GET", "/moderation/tasks"): Operation(
        "list_tasks",
        "List tasks, newest first: by ad, by status, or all",
        TAG_TASKS,
        {
            200: Reply("A page of tasks (an empty list when none match), each as the result route shows it", TaskPage),
            400: Reply("`invalid_parameter`: a bad item_id, status, limit or cursor (`parameter` names which)", Error),
            503: UNAVAILABLE,
        },
        description="For ops: what happened to an ad's tasks, which tasks failed. Keyset pages: paging through never "
        "repeats or skips a task that existed when it began, however many are submitted meanwhile.",
        params=(ITEM_FILTER, STATUS_FILTER, LIMIT, CURSOR),
    ),
    ("GET", "/moderation/moderation_result/{task_id}/events"): Operation(
        "moderation_events",
        "A task's trail: accepted, enqueued, each scoring attempt, DLQ parking, resends",
        TAG_TASKS,
        {200: Reply("The events, oldest first", TaskEvents), 400: BAD_PARAMETER, 404: TASK_NOT_FOUND, 503: UNAVAILABLE},
        params=(TASK_ID,),
    ),
    ("GET", "/health"): Operation(
        "health",
        "For load balancers: is the API able to work (database, SQS, the model scoring a probe ad)",
        TAG_SERVICE,
        {
            200: Reply("The API works: `status` ok, or degraded when the pipeline is behind (see /health/pipeline)",
                       Health),
            503: Reply("Something is down: `code` is dependency_unavailable, `message` names it", (Health, Error),
                       headers=_RETRY_AFTER),
        },
        description="One query, one SQS call, one model score. A stalled scorer does not make this 503: taking a "
        "working API out of rotation would not help it.",
    ),
    ("GET", "/health/pipeline"): Operation(
        "pipeline_health",
        "For uptime probes: are tasks being completed (oldest unfinished task, DLQ depth)",
        TAG_SERVICE,
        {
            200: Reply("Tasks are being completed", Health),
            503: Reply("`code` pipeline_degraded (`pipeline.reasons` says why) or dependency_unavailable",
                       (Health, Error), headers=_RETRY_AFTER),
        },
        description="The same checks as /health, judged by the pipeline: 503 when the oldest pending or processing "
        "task is older than PIPELINE_MAX_AGE_SECONDS (600), or the dead-letter queue holds more than "
        "PIPELINE_MAX_DLQ_DEPTH (0) messages, or a dependency is down.",
    ),
    ("GET", "/openapi.json"): Operation(
        "openapi",
        "This document (OpenAPI 3.1)",
        TAG_SERVICE,
        {200: Reply("The OpenAPI document")},
    ),
    ("GET", "/docs"): Operation(
        "docs",
        "Human-readable API docs (Swagger UI, served from this API: works offline)",
        TAG_SERVICE,
        {200: Reply("An HTML page", media_type="text/html")},
    ),
    ("GET", "/docs/swagger-ui-bundle.js"): Operation(
        "docs_script",
        "Swagger UI's script (vendored swagger-ui-dist)",
        TAG_SERVICE,
        {200: Reply("JavaScript", media_type="application/javascript")},
    ),
    ("GET", "/docs/swagger-ui.css"): Operation(
        "docs_stylesheet",
        "Swagger UI's stylesheet (vendored swagger-ui-dist)",
        TAG_SERVICE,
        {200: Reply("CSS", media_type="text/css")},
    ),
}

# Root paths of the older FastAPI/Kafka clients (seed 000's) -> the canonical route.
ALIASES: dict[tuple[str, str], Alias] = {
    ("POST", "/predict"): Alias("POST", "/moderation/predict"),
    ("POST", "/simple_predict"): Alias("POST", "/moderation/simple_predict"),
    ("POST", "/async_predict"): Alias("POST", "/moderation/async_predict"),
    ("GET", "/moderation_result/{task_id}"): Alias("GET", "/moderation/moderation_result/{task_id}"),
    ("POST", "/close"): Alias("POST", "/moderation/close"),
}

# The legacy contract (issue 25; docs/clients.md#contracts), as data: chalicelib/api/legacy.py
# applies it to every route alike, chalicelib/api/auth.py decides when. Routes whose ad may also be
# named by a JSON body `{"item_id": N}` (every contract; the document keeps the query parameter).
ITEM_BODY = frozenset({("POST", "/moderation/simple_predict"), ("POST", "/moderation/async_predict"),
                       ("POST", "/moderation/close")})
# Bodies the older services required more of than the current contract does: validated first.
LEGACY_BODIES: dict[tuple[str, str], type[BaseModel]] = {("POST", "/moderation/predict"): LegacyAdRequest}
# Fields their success bodies had that the current contract's do not.
LEGACY_FIELDS: dict[tuple[str, str], Mapping[str, Any]] = {
    ("POST", "/moderation/close"): MappingProxyType({"message": "Ad successfully closed"}),
}
CONTRACT = Param(
    CONTRACT_HEADER,
    "header",
    "Optional. The contract this request speaks, instead of the one the client is pinned to (`make api-key`): "
    "`legacy`, the older FastAPI services' answers (200 on submit, 422 `{\"detail\": [{loc, msg, type}]}` for a "
    "rejected parameter or body, `{\"detail\": \"...\"}` for other errors, `description` required), or `current`.",
    schema={"type": "string", "enum": list(CONTRACTS)},
    required=False,
)


# Which scopes a route needs, any one of them (docs/clients.md, "Routes and scopes"): the one
# table chalicelib/api/auth.py enforces and openapi.py documents (403 `insufficient_scope`).
# None: an open route (no API key). Reads with `admin` see every client's tasks; with
# `submit`, the client's own. `moderate` is reserved for the review queue: no route yet.
# tests/unit/test_contract.py holds it to exactly the routes of OPERATIONS.
_READ = frozenset({SUBMIT, ADMIN})
SCOPES: dict[tuple[str, str], frozenset[str] | None] = {
    ("POST", "/moderation/predict"): frozenset({SUBMIT}),
    ("POST", "/moderation/simple_predict"): frozenset({SUBMIT}),
    ("POST", "/moderation/async_predict"): frozenset({SUBMIT}),
    ("POST", "/moderation/async_predict/batch"): frozenset({SUBMIT}),
    ("POST", "/moderation/close"): frozenset({CLOSE}),
    ("GET", "/moderation/moderation_result/{task_id}"): _READ,
    ("GET", "/moderation/tasks"): _READ,
    ("GET", "/moderation/moderation_result/{task_id}/events"): _READ,
    ("GET", "/health"): None,
    ("GET", "/health/pipeline"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/docs"): None,
    ("GET", "/docs/swagger-ui-bundle.js"): None,
    ("GET", "/docs/swagger-ui.css"): None,
}

FORBIDDEN_SCOPE = ("`insufficient_scope`: this key's client has none of the route's scopes ({scopes}); "
                   "or `forbidden`: the key is not registered to a client (docs/clients.md)")
# Every route answers an unknown or repeated query parameter with this 400 (chalicelib/api/requests.py).
BAD_QUERY = "`invalid_parameter`: a query parameter this route does not take, or one given more than once"


def canonical(method: str, path: str) -> tuple[str, str]:
    """The route an alias stands for; any other route itself."""
    alias = ALIASES.get((method, path))
    return (alias.method, alias.path) if alias else (method, path)


def scopes_of(method: str, path: str) -> frozenset[str] | None:
    """The scopes `method path` needs (any one); None for an open route. KeyError: no such route."""
    return SCOPES[canonical(method, path)]


def query_names(method: str, path: str) -> frozenset[str]:
    """The query parameters a route takes; any other is a 400."""
    return frozenset(p.name for p in OPERATIONS[canonical(method, path)].params if p.location == "query")
