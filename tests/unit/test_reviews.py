"""The review loop's rules (chalicelib/domain/reviews.py): pure, so tested directly; and the one list
of reason codes held equal in the code, the request model and docs/reviews.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.api.review_models import REASON_CODES
from chalicelib.domain import reviews as rules
from chalicelib.domain.reviews import QueuedState
from chalicelib.errors import ReviewConflict

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def state(**kw) -> QueuedState:
    base = {"task_id": 1, "status": "completed", "decision": "review", "decided_by": None, "reviewed_by": None,
            "appeal": None}
    return QueuedState(**{**base, **kw})


def refused(code: str, fn, *args) -> None:
    with pytest.raises(ReviewConflict) as caught:
        fn(*args)
    assert caught.value.code == code and caught.value.status_code == 409


def test_the_review_band_and_appeals_are_queued_nothing_else():
    assert rules.pending_kind(state()) == "review"
    assert rules.pending_kind(state(decision="block", appeal="pending")) == "appeal"
    for other in (state(decision="allow"), state(decision="block"), state(status="processing"),
                  state(decision="block", appeal="upheld")):
        assert rules.pending_kind(other) is None
        refused("not_in_queue", rules.check_claim, other, "m1", NOW)


def test_a_live_lease_is_its_holders_only_and_an_expired_one_anyones():
    leased = state(lease_holder="m1", lease_expires_at=LATER)
    refused("lease_held", rules.check_claim, leased, "m2", NOW)
    assert rules.check_claim(leased, "m1", NOW) == "review"  # a renewal
    assert rules.check_claim(leased, "m2", LATER) == "review"  # expired: the queue's again
    assert rules.check_verdict(leased, "m1", NOW) == "review"
    refused("lease_required", rules.check_verdict, leased, "m2", NOW)
    refused("lease_required", rules.check_verdict, leased, "m1", LATER)
    refused("lease_required", rules.check_verdict, state(), "m1", NOW)


def test_four_eyes_on_appeals_of_human_blocks_only():
    human = state(decision="block", decided_by="human", reviewed_by="m1", appeal="pending")
    refused("four_eyes", rules.check_claim, human, "m1", NOW)
    assert rules.check_claim(human, "m2", NOW) == "appeal"
    model = state(decision="block", appeal="pending")
    assert rules.check_claim(model, "m1", NOW) == "appeal"


def test_appeals_once_of_blocks_within_the_window():
    window = timedelta(days=14)
    rules.check_appeal("block", None, NOW - timedelta(days=13), NOW, window, 1)
    refused("not_blocked", rules.check_appeal, "allow", None, NOW, NOW, window, 1)
    refused("not_blocked", rules.check_appeal, "review", None, NOW, NOW, window, 1)
    refused("already_appealed", rules.check_appeal, "block", "upheld", NOW, NOW, window, 1)
    refused("appeal_window_closed", rules.check_appeal, "block", None, NOW - timedelta(days=15), NOW, window, 1)
    assert (rules.appeal_outcome("block"), rules.appeal_outcome("allow")) == ("upheld", "overturned")


def test_reason_codes_are_one_list():
    assert tuple(rules.REASONS) == REASON_CODES
    with pytest.raises(ValueError):
        rules.check_reason("rude")
    table = (Path(__file__).resolve().parents[2] / "docs" / "reviews.md").read_text().split("### Reason codes", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (.+) \|$", table, re.M)
    assert {code: (category, meaning) for code, category, meaning in rows} == rules.REASONS


def test_a_statement_says_who_decided_and_how():
    model = rules.statement({"task_id": 7, "item_id": 3, "decision": "block", "probability": 0.97,
                             "model_version": "v1", "processed_at": "t"}, platform="p")
    assert (model["automated_detection"], model["automated_decision"], model["decided_by"]) == \
        ("Yes", "AUTOMATED_DECISION_FULLY", "model")
    assert model["redress"]["internal_complaint"] is True and model["puid"] == "task-7"
    human = rules.statement({"task_id": 8, "decision": "block", "decided_by": "human", "model_decision": "review",
                             "review_reason": "fraud", "reviewed_at": "t2", "appeal": "upheld"}, platform="p")
    assert (human["automated_decision"], human["category"], human["application_date"]) == \
        ("AUTOMATED_DECISION_NOT_AUTOMATED", "STATEMENT_CATEGORY_SCAMS_AND_FRAUD", "t2")
    assert "upheld" in human["decision_facts"] and human["redress"]["internal_complaint"] is False
    assert set(rules.DSA_FIELDS) <= set(human)
