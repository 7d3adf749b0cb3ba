"""Verdicts: what the service decides for an ad. Pure, no I/O.

The vocabulary (docs/glossary.md): a model gives a *probability* that an ad
breaks the rules; two *thresholds* turn it into a *decision*, `allow`,
`review` or `block` (moderation_results.decision). `block` is exactly
`is_violation`; `review` is the optional *review band* just below the block
threshold, for people. What happens to an SQS message is its *disposition*
(chalicelib/scoring/dispositions.py), never a decision.
"""

from __future__ import annotations

from typing import NamedTuple

ALLOW = "allow"
REVIEW = "review"
BLOCK = "block"


class Thresholds(NamedTuple):
    """A model version's thresholds: block at `block` and above; review from
    `review` (None: no review band)."""

    block: float
    review: float | None = None


def decide(probability: float, thresholds: Thresholds) -> str:
    """block at or above the block threshold, review at or above the review threshold, else allow."""
    if probability >= thresholds.block:
        return BLOCK
    if thresholds.review is not None and probability >= thresholds.review:
        return REVIEW
    return ALLOW
