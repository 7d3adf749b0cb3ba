"""The HTTP contract, in one place: every request, response and error body of
every route (pydantic models), and a registry of the routes themselves
(summary, parameters, request model, responses by status).

The routes validate what clients send and shape what they return through these
models (chalicelib/api/handlers.py), and chalicelib/api/openapi.py renders the same models
and registry, with Chalice's route table, into the OpenAPI document served at
GET /openapi.json. One definition: the document cannot drift from the code.

Cold start: the models are declared with `defer_build`, so pydantic builds a
model's validator the first time a request needs it, not when the API function
imports this module. Nothing here renders JSON Schema; openapi.py does, lazily.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, StrictBool, StrictInt, WithJsonSchema

from chalicelib.domain.features import MAX_CATEGORY, MAX_DESCRIPTION_CHARS, MAX_IMAGES, MAX_NAME_CHARS, MIN_CATEGORY, AdFeatures


def _integral(value: Any) -> Any:
    """JSON Schema's `integer` is any number without a fractional part, so
    `1881.0` is one (the fuzzer sent it; tests/contract). Such floats become
    ints; anything else goes on to StrictInt, which still refuses `1.5`,
    `"1"` and `true`."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer as JSON Schema (and the OpenAPI document) defines it.
JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]
# Ids are PostgreSQL BIGINTs.
MAX_ID = 2**63 - 1
# Flat, constraints before the validator: nested in JsonInt, pydantic would
# render them into the JSON Schema as unknown `gt`/`le` keywords.
Id = Annotated[StrictInt, Field(gt=0, le=MAX_ID), BeforeValidator(_integral)]

# Batch submit: at most this many items per request.
MAX_BATCH_ITEMS = 100

# Idempotency-Key: 1..255 printable ASCII characters, without leading or
# trailing spaces (HTTP strips those from header values, so a key that had them
# would reach us as a different key).
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX = 255
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
REPLAYED_HEADER = "Idempotent-Replayed"

TaskStatus = Literal["pending", "processing", "completed", "failed"]
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
ErrorKind = Literal["permanent", "transient", "stuck"]
# task_events.kind (migrations/V3__task_events.sql).
EventKind = Literal["accepted", "enqueued", "send_failed", "attempt", "redriven", "dlq_parked", "resent", "failed_stuck"]
Probability = Annotated[float, Field(ge=0, le=1)]
# What to do with the ad (chalicelib/domain/tasks.py decide): `block` is exactly is_violation;
# `review`, only from a model with a review band, is the band just below its threshold.
Decision = Literal["allow", "review", "block"]
DECISION_HELP = ("allow | review | block: block is is_violation; review (a model with a review band) means "
                 "probability just below the threshold: send the ad to a person")
# ISO 8601 as the API has always written them (`+00:00`, not pydantic's `Z`).
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# GET /moderation/tasks: page sizes, and the cursor. The cursor is opaque to
# clients: base64url, unpadded, of the last task id of the page as 8 bytes. The
# pattern admits exactly those encodings (the top bit clear, the unused last 2 bits
# zero), so a cursor the document calls valid is one the route accepts.
DEFAULT_PAGE = 20
MAX_PAGE = 100
CURSOR_PATTERN = r"^[A-Za-f][A-Za-z0-9_-]{9}[AEIMQUYcgkosw048]$"


def valid_idempotency_key(key: str) -> bool:
    return bool(_IDEMPOTENCY_KEY.fullmatch(key))


class Contract(BaseModel):
    """Base of every body in the contract."""

    # defer_build: see the module docstring. Responses ignore unknown fields:
    # the document, not whatever a use case happens to return, is the contract
    # (tests/unit/test_contract.py checks the two stay equal).
    model_config = ConfigDict(defer_build=True, extra="ignore")


# --- requests ------------------------------------------------------------------


class AdRequest(Contract):
    """Body of POST /moderation/predict (the seeds' AdRequest). Unknown fields
    are ignored, as the seeds' FastAPI model did."""

    model_config = ConfigDict(frozen=True)

    seller_id: Id
    is_verified_seller: StrictBool
    item_id: Id
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    category: JsonInt = Field(ge=MIN_CATEGORY, le=MAX_CATEGORY)
    images_qty: JsonInt = Field(ge=0, le=MAX_IMAGES)

    def features(self) -> AdFeatures:
        return AdFeatures.of(self)


class BatchRequest(Contract):
    """Body of POST /moderation/async_predict/batch. A misspelt field is an
    error rather than silently an empty batch."""

    model_config = ConfigDict(extra="forbid")

    item_ids: list[Id] = Field(min_length=1, max_length=MAX_BATCH_ITEMS, description="Ads to moderate, in order; repeats allowed")


# --- responses -----------------------------------------------------------------


class Prediction(Contract):
    is_violation: bool
    probability: Probability
    model_version: str
    decision: Decision = Field(description=DECISION_HELP)


class Accepted(Contract):
    task_id: Id
    status: Literal["pending"]
    message: str = Field(examples=["Moderation request accepted"])


class Closed(Contract):
    item_id: Id
    status: Literal["closed"]


class TaskResult(Contract):
    """GET .../moderation_result/{task_id}: the seeds' fields first, then ours."""

    task_id: Id
    status: TaskStatus
    is_violation: bool | None = Field(description="null until completed")
    probability: Probability | None = Field(description="null until completed")
    error_message: str | None = Field(description="why the task failed; null unless failed")
    item_id: Id
    model_version: str | None
    decision: Decision | None = Field(description=DECISION_HELP + "; null until completed (and for tasks "
                                      "scored before decisions existed)")
    attempts: int = Field(ge=0, description="highest SQS receive count seen")
    error_kind: ErrorKind | None = Field(
        description="permanent: retrying cannot help; transient: retries exhausted (a redrive from the DLQ scores it "
        "again); stuck: no result within the retry horizon"
    )
    last_error: str | None = Field(description="the last retry's error, also while still processing")
    created_at: Timestamp
    started_at: Timestamp | None
    processed_at: Timestamp | None


class TaskPage(Contract):
    tasks: list[TaskResult] = Field(description="newest first (by task_id)")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next, older page (with the same filters); null on the last page"
    )


class TaskEvent(Contract):
    at: Timestamp
    kind: EventKind
    attempt: int | None
    outcome: str | None
    error: str | None
    message_id: str | None
    request_id: str | None


class TaskEvents(Contract):
    task_id: Id
    events: list[TaskEvent] = Field(description="oldest first")


class ItemError(Contract):
    code: Literal["ad_not_found"]
    message: str


class BatchItemAccepted(Contract):
    item_id: Id
    task_id: Id
    status: Literal["pending"]


class BatchItemRejected(Contract):
    item_id: Id
    error: ItemError


class BatchAccepted(Contract):
    items: list[BatchItemAccepted | BatchItemRejected] = Field(description="one per requested item, in request order")
    accepted: int = Field(ge=0, description="items with a task")
    rejected: int = Field(ge=0, description="items with an error")


class DependencyCheck(Contract):
    ok: bool
    error: str | None = None
    depth: dict[str, int] | None = Field(default=None, description="visible messages in the dead-letter queue")
    version: str | None = Field(default=None, description="model version")
    probability: Probability | None = Field(default=None, description="the model's score of the fixed probe ad")


class HealthChecks(Contract):
    database: DependencyCheck
    queue: DependencyCheck
    model: DependencyCheck


class PipelineCheck(Contract):
    ok: bool = Field(description="tasks are being completed: both bounds hold")
    oldest_unfinished_seconds: float | None = Field(
        description="age of the oldest pending or processing task; null when there is none or the database is down"
    )
    max_unfinished_seconds: int = Field(description="PIPELINE_MAX_AGE_SECONDS")
    dlq_depth: int | None = Field(description="visible messages in the dead-letter queue; null when SQS is down")
    max_dlq_depth: int = Field(description="PIPELINE_MAX_DLQ_DEPTH")
    reasons: list[str] = Field(description="why the pipeline is not ok, one sentence each")


class Health(Contract):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="unavailable: a dependency is down; degraded: the API works but tasks are not being completed in time "
        "or the dead-letter queue holds messages"
    )
    checks: HealthChecks
    pipeline: PipelineCheck
    code: str | None = Field(default=None, description="dependency_unavailable or pipeline_degraded")
    message: str | None = Field(default=None, description="names what is down, or why the pipeline is degraded")


class FieldError(Contract):
    field: str
    message: str


class Error(Contract):
    """Every error the API itself returns."""

    code: str = Field(description="machine code, e.g. invalid_parameter, ad_not_found, dependency_unavailable")
    message: str
    detail: str = Field(description="the same text as message, for clients written for the FastAPI services")
    parameter: str | None = Field(default=None, description="invalid_parameter: the query, path or header parameter")
    errors: list[FieldError] | None = Field(default=None, description="invalid_body: one entry per invalid field")


class GatewayError(Contract):
    """What API Gateway itself answers (missing API key, throttling), before the API runs."""

    message: str


# --- the route registry --------------------------------------------------------


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
    "(a UUID) per logical request: keys are shared by every client of the API.",
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
# operation (README, "Load testing"). The deployed API: API Gateway's throttles (the stage's rate,
# a client's usage plan) and its 503 for a request the API function did not answer (throttled at
# its reserved concurrency, failed, timed out). `make run`: its bound on requests in flight.
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

# Root paths of the older FastAPI/Kafka clients -> the canonical route.
ALIASES: dict[tuple[str, str], Alias] = {
    ("POST", "/async_predict"): Alias("POST", "/moderation/async_predict"),
    ("GET", "/moderation_result/{task_id}"): Alias("GET", "/moderation/moderation_result/{task_id}"),
}
