"""Decision thresholds from the precision/recall trade-off, and the metrics at them.

The held-out ads are split in two (stratified, seeded): the thresholds are
chosen on the *calibration* half and every reported metric is measured on the
*test* half, which played no part in the choice (a threshold tuned on the ads
it is scored on reports an optimistic precision).

- block threshold (`threshold`, what `is_violation` means): the lowest
  probability at which precision on the calibration half is at least
  `target_precision`, i.e. the most violations caught while at most
  1 - target_precision of the blocked ads are honest ones (among cuts that
  flag at least MIN_FLAGGED ads: a precision spike on a handful is noise);
- review threshold (optional): the highest probability at which recall is at
  least `review_recall`, when that is below the block threshold; ads between
  the two go to people (`decision: "review"`) instead of being blocked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_curve, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split

T = TypeVar("T")
# A cut that flags fewer calibration ads than this is not considered: the precision of a
# handful of ads is noise (one more honest seller among 10 moves it by 10 points).
MIN_FLAGGED = 50


class ThresholdError(ValueError):
    """The target cannot be met on these ads."""


@dataclass(frozen=True)
class Choice:
    threshold: float
    review_threshold: float | None
    target_precision: float
    review_recall: float | None
    calibration: dict[str, float]  # precision/recall at the thresholds, on the calibration half

    def as_json(self) -> dict[str, Any]:
        return {"target_precision": self.target_precision, "review_recall": self.review_recall,
                "chosen_on": "calibration half of the held-out ads", "calibration": self.calibration}


def split(ads: Sequence[T], labels: Sequence[int], seed: int) -> tuple[list[T], list[T]]:
    """(calibration, test): a stratified, seeded half each."""
    calibration, test = train_test_split(list(ads), test_size=0.5, stratify=list(labels), random_state=seed)
    return list(calibration), list(test)


def _floor(value: float) -> float:
    # Stored with 6 decimals, rounded down: every probability the choice counted stays on its side.
    return math.floor(value * 1e6) / 1e6


def choose(y: Sequence[int], proba: Sequence[float], target_precision: float, review_recall: float | None,
           min_flagged: int = MIN_FLAGGED) -> Choice:
    precision, recall, cuts = precision_recall_curve(np.asarray(y), np.asarray(proba))
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    flagged = np.array([(np.asarray(proba) >= cut).sum() for cut in cuts])
    supported = flagged >= min_flagged
    meets = np.flatnonzero((precision >= target_precision) & supported)
    if not len(meets):
        best = int(np.argmax(np.where(supported, precision, -1.0)))
        raise ThresholdError(f"no threshold flagging at least {min_flagged} calibration ads reaches precision "
                             f"{target_precision} (best {precision[best]:.3f}, at p >= {cuts[best]:.4f}); "
                             "lower TARGET_PRECISION")
    block = int(meets[0])  # cuts ascend: the first that meets it keeps the most recall
    threshold = _floor(float(cuts[block]))
    review = None
    if review_recall:
        catches = np.flatnonzero(recall >= review_recall)
        below = float(cuts[int(catches[-1])]) if len(catches) else None
        review = _floor(below) if below is not None and below < threshold else None
    y_arr, p_arr = np.asarray(y), np.asarray(proba)
    at = {"precision": float(precision[block]), "recall": float(recall[block])}
    if review is not None:
        at["review_or_block_recall"] = float(((p_arr >= review) & (y_arr == 1)).sum() / max(1, (y_arr == 1).sum()))
    return Choice(threshold, review, target_precision, review_recall, {k: round(v, 4) for k, v in at.items()})


def metrics(y: Sequence[int], proba: Sequence[float], threshold: float, review_threshold: float | None) -> dict[str, Any]:
    """The metrics at these thresholds (rounded so an artifact does not churn on last-bit differences)."""
    y_arr, p_arr = np.asarray(y), np.asarray(proba)
    blocked = (p_arr >= threshold).astype(int)
    values = {
        "roc_auc": roc_auc_score(y_arr, p_arr),
        "precision": precision_score(y_arr, blocked, zero_division=0),
        "recall": recall_score(y_arr, blocked, zero_division=0),
        "f1": f1_score(y_arr, blocked, zero_division=0),
        "accuracy": accuracy_score(y_arr, blocked),
        "violation_rate": float(y_arr.mean()),
        "block_rate": float(blocked.mean()),
        "review_rate": 0.0,
    }
    if review_threshold is not None:
        review = (p_arr >= review_threshold) & (p_arr < threshold)
        values["review_rate"] = float(review.mean())
        values["review_violation_rate"] = float(y_arr[review].mean()) if review.any() else 0.0
        values["review_or_block_recall"] = float(((p_arr >= review_threshold) & (y_arr == 1)).sum() / max(1, y_arr.sum()))
    return {name: round(float(v), 4) for name, v in values.items()} | {"size": len(y_arr)}


def plot(calibration: tuple[Sequence[int], Sequence[float]], test: tuple[Sequence[int], Sequence[float]],
         choice: Choice, path: Path, title: str) -> Path:
    """The precision/recall curves of both halves, with the chosen thresholds marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pr, by_threshold) = plt.subplots(1, 2, figsize=(13, 5.5))
    for (y, p), label, color in ((calibration, "calibration half (chooses)", "tab:blue"),
                                 (test, "test half (reports)", "tab:orange")):
        precision, recall, _ = precision_recall_curve(np.asarray(y), np.asarray(p))
        pr.plot(recall, precision, label=label, color=color)
    for name, cut, marker in (("block", choice.threshold, "o"), ("review", choice.review_threshold, "s")):
        if cut is None:
            continue
        labels, probabilities = np.asarray(test[0]), np.asarray(test[1])
        hit = probabilities >= cut
        at_p = float(labels[hit].mean()) if hit.any() else 1.0
        at_r = float((hit & (labels == 1)).sum() / max(1, (labels == 1).sum()))
        pr.plot([at_r], [at_p], marker=marker, color="tab:red", markersize=9, linestyle="none",
                label=f"{name} >= {cut:.4f}: precision {at_p:.3f}, recall {at_r:.3f} (test)")
    pr.axhline(choice.target_precision, color="tab:red", linestyle=":", linewidth=1,
               label=f"target precision {choice.target_precision}")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_ylim(0, 1.02)
    pr.set_title("Precision / recall, held-out ads")
    pr.legend(loc="lower left", fontsize=8)

    precision, recall, cuts = precision_recall_curve(np.asarray(calibration[0]), np.asarray(calibration[1]))
    by_threshold.plot(cuts, precision[:-1], label="precision", color="tab:green")
    by_threshold.plot(cuts, recall[:-1], label="recall", color="tab:purple")
    by_threshold.axvline(choice.threshold, color="tab:red", linestyle="--", label=f"block {choice.threshold:.4f}")
    if choice.review_threshold is not None:
        by_threshold.axvspan(choice.review_threshold, choice.threshold, color="tab:orange", alpha=0.15,
                             label=f"review band [{choice.review_threshold:.4f}, {choice.threshold:.4f})")
    by_threshold.set_xlabel("threshold (probability)")
    by_threshold.set_title("Calibration half: precision and recall by threshold")
    by_threshold.legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
