"""The human review loop's rules (issue 21; docs/reviews.md). Pure: no I/O.

Reason codes, who may claim and decide a queued task (leases, four eyes), the appeal
window, and the statement of reasons (DSA Art. 17) built from a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.errors import ReviewConflict as ReviewRefused

ALLOW = "allow"
BLOCK = "block"
VERDICTS = (ALLOW, BLOCK)

# Kinds of queued work: the model's review band, and a client's appeal of a block.
REVIEW = "review"
APPEAL = "appeal"
KINDS = (REVIEW, APPEAL)

# decided_by
MODEL = "model"
HUMAN = "human"

# An appeal's state on the task (moderation_results.appeal).
APPEAL_PENDING = "pending"
APPEAL_UPHELD = "upheld"  # the block stands
APPEAL_OVERTURNED = "overturned"  # the ad is allowed

# The one list of reason codes a verdict may give (the docs' table is held to it by a test),
# each with the DSA transparency database's category and the ground it is judged on.
# Every ground is the platform's terms (DECISION_GROUND_INCOMPATIBLE_CONTENT): this service
# applies a marketplace's rules; whether an ad is also illegal is a lawyer's call, not a queue's.
REASONS: dict[str, tuple[str, str]] = {
    "spam": ("STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE", "repeated, off-topic or bulk listings"),
    "prohibited_item": ("STATEMENT_CATEGORY_UNSAFE_AND_PROHIBITED_PRODUCTS",
                        "the item is on the marketplace's list of prohibited items"),
    "fraud": ("STATEMENT_CATEGORY_SCAMS_AND_FRAUD", "the listing looks like a scam or fraud"),
    "misleading": ("STATEMENT_CATEGORY_CONSUMER_INFORMATION", "misleading description, price or seller information"),
    "other": ("STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE", "another breach of the marketplace's terms"),
}
# What a block the model made alone is filed under in its statement.
MODEL_REASON = "model"
MODEL_CATEGORY = "STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE"

DEFAULT_LEASE_SECONDS = 600
DEFAULT_APPEAL_WINDOW_DAYS = 14
MAX_NOTE_CHARS = 2000
MAX_APPEAL_REASON_CHARS = 2000


@dataclass(frozen=True, slots=True)
class QueuedState:
    """What the rules need of a task when someone claims or decides it."""

    task_id: int
    status: str
    decision: str | None
    decided_by: str | None
    reviewed_by: str | None
    appeal: str | None
    # The lease of the pending kind, if any.
    lease_holder: str | None = None
    lease_expires_at: datetime | None = None


def pending_kind(state: QueuedState) -> str | None:
    """Which queued work the task is waiting for: an appeal first, else the review band; None: none."""
    if state.appeal == APPEAL_PENDING:
        return APPEAL
    if state.status == "completed" and state.decision == REVIEW:
        return REVIEW
    return None


def lease_live(state: QueuedState, now: datetime) -> bool:
    return state.lease_holder is not None and state.lease_expires_at is not None and state.lease_expires_at > now


def check_claim(state: QueuedState, moderator: str, now: datetime) -> str:
    """The kind the moderator may claim; ReviewRefused otherwise. Re-claiming one's own live
    lease renews it."""
    kind = pending_kind(state)
    if kind is None:
        raise ReviewRefused("not_in_queue", f"task {state.task_id} is not waiting for a review or an appeal")
    if lease_live(state, now) and state.lease_holder != moderator:
        raise ReviewRefused("lease_held", f"task {state.task_id} is claimed by another moderator until "
                            f"{state.lease_expires_at.isoformat() if state.lease_expires_at else '?'}")
    four_eyes(state, moderator, kind)
    return kind


def four_eyes(state: QueuedState, moderator: str, kind: str) -> None:
    """An appeal of a human's block is decided by another moderator (DSA Art. 20: not by the
    one who decided it); a block the model made alone goes to any moderator."""
    if kind == APPEAL and state.decided_by == HUMAN and state.reviewed_by == moderator:
        raise ReviewRefused("four_eyes", f"task {state.task_id}'s appeal must be decided by a moderator other than "
                            "the one who blocked it")


def check_verdict(state: QueuedState, moderator: str, now: datetime) -> str:
    """The kind the lease holder decides; ReviewRefused unless `moderator` holds a live lease."""
    kind = pending_kind(state)
    if kind is None:
        raise ReviewRefused("not_in_queue", f"task {state.task_id} is not waiting for a review or an appeal")
    if not lease_live(state, now) or state.lease_holder != moderator:
        lost = "expired" if state.lease_holder == moderator else "not yours"
        raise ReviewRefused("lease_required", f"task {state.task_id}: claim it first (your lease is {lost}): "
                            "POST /moderation/reviews/{task_id}/claim")
    four_eyes(state, moderator, kind)
    return kind


def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise ValueError(f"unknown reason code; the codes are {', '.join(REASONS)}")
    return reason


def check_appeal(decision: str | None, appeal: str | None, decided_at: datetime | None, now: datetime,
                 window: timedelta, task_id: int) -> None:
    """A client may appeal a block, once, within `window` of the decision."""
    if appeal is not None:
        raise ReviewRefused("already_appealed", f"task {task_id} was already appealed ({appeal})")
    if decision != BLOCK:
        raise ReviewRefused("not_blocked", f"task {task_id} is not blocked (decision {decision}): only a block "
                            "can be appealed")
    if decided_at is not None and now - decided_at > window:
        raise ReviewRefused("appeal_window_closed", f"task {task_id} was decided more than {window.days} days ago: "
                            "the appeal window is closed")


def appeal_outcome(decision: str) -> str:
    return APPEAL_UPHELD if decision == BLOCK else APPEAL_OVERTURNED


# The statement's fields that are the DSA Transparency Database API's own (make statements writes
# these only, unless asked for all); the rest are this service's (docs/reviews.md#the-statement-of-reasons).
DSA_FIELDS = (
    "puid", "platform_name", "decision_visibility", "decision_ground", "incompatible_content_ground",
    "incompatible_content_explanation", "category", "content_type", "decision_facts", "source_type",
    "automated_detection", "automated_decision", "application_date", "content_date",
)


def statement(task: dict[str, Any], *, platform: str) -> dict[str, Any]:
    """The statement of reasons of a block (DSA Art. 17), in the field names of the Commission's DSA
    Transparency Database API (docs/reviews.md#the-statement-of-reasons). `task` is the task's view
    (the result route's body) with the ad's category."""
    human = task.get("decided_by") == HUMAN
    reason = task.get("review_reason") if human else MODEL_REASON
    category, explanation = REASONS.get(reason or "", (MODEL_CATEGORY, "the moderation model scored the ad above "
                                                       "its block threshold"))
    model_decision = task.get("model_decision") or task.get("decision")
    if human:
        # Detected by the model when it flagged the ad (review band or block); decided by a person.
        detected = model_decision in (REVIEW, BLOCK)
        automated_decision = "AUTOMATED_DECISION_NOT_AUTOMATED"
        how = (f"A moderator reviewed the ad and blocked it ({reason}: {explanation}). The model had scored it "
               f"{task.get('probability')} ({model_decision}).")
    else:
        detected = True
        automated_decision = "AUTOMATED_DECISION_FULLY"
        how = (f"The moderation model (version {task.get('model_version')}) scored the ad {task.get('probability')}, "
               "above its block threshold, and blocked it without a person.")
    appeal = task.get("appeal")
    if appeal == APPEAL_UPHELD:
        how += " The block was appealed and upheld by a moderator."
    return {
        "puid": f"task-{task['task_id']}",
        "platform_name": platform,
        "decision_visibility": ["DECISION_VISIBILITY_CONTENT_REMOVED"],
        "decision_ground": "DECISION_GROUND_INCOMPATIBLE_CONTENT",
        "incompatible_content_ground": f"terms of service: {reason}",
        "incompatible_content_explanation": explanation,
        "category": category,
        "content_type": ["CONTENT_TYPE_TEXT"],
        "decision_facts": how,
        "source_type": "SOURCE_VOLUNTARY",
        "automated_detection": "Yes" if detected else "No",
        "automated_decision": automated_decision,
        "application_date": task.get("reviewed_at") if human else task.get("processed_at"),
        "content_date": task.get("created_at"),
        # Art. 17(3)(f): the redress open to the seller.
        "redress": {
            "internal_complaint": appeal is None,
            "appeal_state": appeal,
            "how": "POST /moderation/appeals {task_id, reason} within the appeal window; or out-of-court "
                   "dispute settlement (DSA Art. 21), or a court",
        },
        "task_id": task["task_id"],
        "item_id": task.get("item_id"),
        "reason_code": reason,
        "decided_by": HUMAN if human else MODEL,
    }
