"""The review loop's bodies (issue 21; docs/reviews.md): requests, the queue, claims, appeals and the
statement of reasons. Beside chalicelib/api/models.py, whose base and field types they use; the
route table that names them is chalicelib/api/review_routes.py.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import ConfigDict, Field

from chalicelib.api.models import Contract, Decision, Id, Probability, Timestamp

ReviewKind = Literal["review", "appeal"]
REVIEW_KINDS: tuple[str, ...] = get_args(ReviewKind)
Verdict = Literal["allow", "block"]
# The reason codes: chalicelib/domain/reviews.py REASONS (tests/unit/test_reviews.py holds the two equal).
ReasonCode = Literal["spam", "prohibited_item", "fraud", "misleading", "other"]
REASON_CODES: tuple[str, ...] = get_args(ReasonCode)


class VerdictRequest(Contract):
    """Body of POST /moderation/reviews/{task_id}/verdict."""

    model_config = ConfigDict(extra="forbid")

    decision: Verdict
    reason: ReasonCode = Field(description="a reason code (docs/reviews.md#reason-codes)")
    note: str | None = Field(default=None, max_length=2000, description="free text for the record; never shown to the client")


class AppealRequest(Contract):
    """Body of POST /moderation/appeals."""

    model_config = ConfigDict(extra="forbid")

    task_id: Id
    reason: str = Field(min_length=1, max_length=2000, description="the client's statement: why the block is wrong")


class QueuedTask(Contract):
    task_id: Id
    kind: ReviewKind = Field(description="review: the model's review band; appeal: a client appealed a block")
    waiting_since: Timestamp | None
    item_id: Id
    probability: Probability | None = Field(description="the model's probability")
    model_version: str | None
    model_decision: Decision | None
    decision: Decision | None = Field(description="the current decision (review, or the block appealed)")
    reviewed_by: str | None = Field(description="an appeal of a human block: who blocked it (not you: four eyes)")
    review_reason: str | None
    name: str | None = Field(description="the ad's title (null: the ad was deleted)")
    description: str | None
    category: int | None
    images_qty: int | None
    seller_id: int | None
    is_verified_seller: bool | None
    appeal_reason: str | None = Field(description="an appeal: the client's statement")
    lease_holder: str | None = Field(description="who holds the lease (you, if anyone: others' leased tasks are not listed)")
    lease_expires_at: Timestamp | None


class ReviewPage(Contract):
    tasks: list[QueuedTask] = Field(description="oldest first (by task_id)")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page (same filters); null on the last page")


class Claim(Contract):
    task_id: Id
    kind: ReviewKind
    lease_holder: str = Field(description="your client id")
    lease_expires_at: Timestamp = Field(description="decide before this, or the task goes back to the queue")


class AppealAccepted(Contract):
    task_id: Id
    appeal: Literal["pending"]
    message: str


class Redress(Contract):
    internal_complaint: bool = Field(description="an appeal is still open to the seller")
    appeal_state: Literal["pending", "upheld", "overturned"] | None
    how: str


class Statement(Contract):
    """A statement of reasons (DSA Art. 17) in the DSA Transparency Database's field names."""

    puid: str
    platform_name: str
    decision_visibility: list[str]
    decision_ground: Literal["DECISION_GROUND_ILLEGAL_CONTENT", "DECISION_GROUND_INCOMPATIBLE_CONTENT"]
    incompatible_content_ground: str
    incompatible_content_explanation: str
    category: str
    content_type: list[str]
    decision_facts: str
    source_type: str
    automated_detection: Literal["Yes", "No"]
    automated_decision: Literal["AUTOMATED_DECISION_FULLY", "AUTOMATED_DECISION_PARTIALLY",
                                "AUTOMATED_DECISION_NOT_AUTOMATED"]
    application_date: str | None
    content_date: str | None
    redress: Redress
    task_id: Id
    item_id: Id | None
    reason_code: str | None
    decided_by: Literal["model", "human"]
