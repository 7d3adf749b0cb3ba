"""Human verdicts as training labels (issue 21; docs/reviews.md#the-loop-feeds-the-model).

A moderator's `block` is label 1, `allow` label 0, for the ad as it is now. Each counts HUMAN_WEIGHT
times a generated example: a person looked at it, and the review band is where the model is unsure.
They are split by ad (every verdict of one ad on the same side), seeded, TEST_SHARE to the test
side, so a model is never scored on an ad it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from chalicelib.domain.features import AdFeatures

HUMAN_WEIGHT = 3.0
TEST_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class HumanLabel:
    task_id: int
    item_id: int
    is_violation: bool
    model_decision: str | None
    is_verified_seller: bool
    name: str
    description: str
    category: int
    images_qty: int

    def features(self) -> AdFeatures:
        return AdFeatures.of(self)


def load(database_url: str) -> list[HumanLabel]:
    """Every task a person decided, with its ad (chalicelib/storage/reviews.py human_labels)."""
    from chalicelib.storage.db import Database
    from chalicelib.storage.reviews import ReviewStore

    db = Database(database_url)
    try:
        rows = ReviewStore(db).human_labels()
    finally:
        db.close()
    return [HumanLabel(task_id=r["task_id"], item_id=r["item_id"], is_violation=r["decision"] == "block",
                       model_decision=r["model_decision"], is_verified_seller=bool(r["is_verified_seller"]),
                       name=r["name"], description=r["description"] or "", category=int(r["category"]),
                       images_qty=int(r["images_qty"])) for r in rows]


def split(labels: Sequence[HumanLabel], seed: int) -> tuple[list[HumanLabel], list[HumanLabel]]:
    """(train, test) by ad: an ad's side is a seeded hash of its id, so it never changes with what else
    was labelled, and the same seed gives the same split."""
    def side(item_id: int) -> bool:
        digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < TEST_SHARE

    train = [label for label in labels if not side(label.item_id)]
    test = [label for label in labels if side(label.item_id)]
    return train, test


def fingerprint(labels: Sequence[HumanLabel]) -> str:
    rows = [[label.task_id, label.item_id, label.is_violation, label.name, label.description, label.category,
             label.images_qty, label.is_verified_seller] for label in labels]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def agreement(labels: Sequence[HumanLabel], decisions: Sequence[str]) -> float | None:
    """The share of `labels` whose decision (allow | review | block) is the person's; review disagrees."""
    if not labels:
        return None
    same = sum(1 for label, d in zip(labels, decisions, strict=True) if d == ("block" if label.is_violation else "allow"))
    return same / len(labels)
