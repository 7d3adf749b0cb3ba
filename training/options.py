"""The training options the tooling shares (`make train`, `make model-publish`), without
importing scikit-learn: `make model-list` and friends parse them too, and need not pay
the two seconds that importing it takes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_N = 6000
DEFAULT_SEED = 42
DEFAULT_TARGET_PRECISION = 0.95
DEFAULT_REVIEW_RECALL = 0.8
# Under build/ (git-ignored), never chalicelib/: what ships stays the artifact alone.
PLOT_PATH = Path(__file__).resolve().parents[1] / "build" / "train" / "precision_recall.png"


def review_recall_arg(value: str) -> float | None:
    """--review-recall: a recall in (0, 1], or 0 / none for no review band."""
    if value.lower() in ("", "0", "none", "off"):
        return None
    recall = float(value)
    if not 0 < recall <= 1:
        raise argparse.ArgumentTypeError(f"a recall between 0 and 1, or none: {value!r}")
    return recall


def add_threshold_args(parser: argparse.ArgumentParser, *, plot: bool = True) -> None:
    """The threshold options of `make train` and `make model-publish` (which names its own curve)."""
    parser.add_argument("--target-precision", type=float, default=DEFAULT_TARGET_PRECISION,
                        help="block at the lowest probability with at least this held-out precision")
    parser.add_argument("--review-recall", type=review_recall_arg, default=DEFAULT_REVIEW_RECALL,
                        help="review band down to the probability that still catches this share of violations "
                             "(0 or none: no review band)")
    if plot:
        parser.add_argument("--plot", type=Path, default=PLOT_PATH, help="precision/recall curve PNG")
