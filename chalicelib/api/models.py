"""The HTTP contract's bodies, in one place: every request, response and error
body of every route (pydantic models). The route table that names them per
route and status is chalicelib/api/routes.py.

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
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

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
EventKind = Literal["accepted", "enqueued", "send_failed", "attempt", "redriven", "dlq_parked", "resent", "failed_stuck",
                    # the review loop (migrations/V10; docs/reviews.md)
                    "claimed", "lease_expired", "reviewed", "appealed", "appeal_decided"]
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


class LegacyAdRequest(AdRequest):
    """The legacy contract's POST /moderation/predict body (docs/clients.md#contracts): both older
    services required `description`, so a missing or empty one is their 422, where the current
    contract scores it as ""."""

    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)


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
    # The review loop (docs/reviews.md). Defaults: the fields came after the seeds' clients.
    decided_by: Literal["model", "human"] | None = Field(
        default=None, description="who made `decision`: the model, or a moderator (a review or an appeal); null until completed")
    model_decision: Decision | None = Field(default=None, description="the model's own decision, kept when a person "
                                            "overrode it (the same as `decision` otherwise)")
    reviewed_by: str | None = Field(default=None, description="the client id of the moderator who made the latest "
                                    "human decision")
    review_reason: str | None = Field(default=None, description="that decision's reason code (docs/reviews.md)")
    reviewed_at: Timestamp | None = Field(default=None, description="when")
    appeal: Literal["pending", "upheld", "overturned"] | None = Field(
        default=None, description="the task's appeal: pending, upheld (the block stands) or overturned (allowed); null: none")


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
    actor: str | None = Field(default=None, description="who acted: the moderator's or the client's id "
                              "(claimed, lease_expired, reviewed, appealed, appeal_decided)")


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


class RefusedModel(Contract):
    version: str | None = Field(description="the version refused (null: the registry could not be read)")
    reason: str = Field(description="why: sha256 mismatch, does not load, probe ads scored otherwise, unreadable")


class ModelCheck(DependencyCheck):
    """The model check, with the registry's view (docs/models.md#the-registry-ship-a-model-without-a-deploy)."""

    registry: str | None = Field(default=None, description="the registry's bucket; null: the packaged model, no registry")
    live_alias: str | None = Field(default=None, description="the version the registry's `live` alias names")
    refused: RefusedModel | None = Field(default=None, description="the latest version refused, and why "
                                         "(status degraded; the version in `version` serves)")
    check_seconds: int | None = Field(default=None, description="MODEL_ALIAS_CHECK_SECONDS: how often the alias is re-checked")


class HealthChecks(Contract):
    database: DependencyCheck
    queue: DependencyCheck
    model: ModelCheck


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
    reviews: ReviewBacklog | None = Field(default=None, description="the human review backlog (docs/reviews.md): "
                                          "reported, never failing the check")
    code: str | None = Field(default=None, description="dependency_unavailable, pipeline_degraded or model_refused")
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


class LegacyError(Contract):
    """An error under the legacy contract: FastAPI's HTTPException body."""

    detail: str


class LegacyFieldError(Contract):
    loc: list[str | int] = Field(description='where: ["query", "item_id"], ["path", "task_id"], ["body", "name"], ...')
    msg: str
    type: str = Field(description="missing, int_parsing, greater_than, value_error, ...")


class LegacyValidationError(Contract):
    """422 under the legacy contract: FastAPI's RequestValidationError body."""

    detail: list[LegacyFieldError]


class GatewayError(Contract):
    """What API Gateway itself answers (missing API key, throttling), before the API runs."""

    message: str


# --- the review loop (issue 21): the backlog /health/pipeline reports; the rest is review_models.py


class ReviewBacklog(Contract):
    review: int = Field(ge=0, description="tasks in the review band waiting for a verdict (leased ones too)")
    appeal: int = Field(ge=0, description="appeals waiting for a verdict")
    oldest_seconds: float | None = Field(description="how long the oldest has waited; null: none")
