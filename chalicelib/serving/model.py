"""Score ads with the exported logistic-regression model, in pure Python.

The Lambda must not import scikit-learn, scipy or numpy (package size, cold
starts), so this module re-implements the fitted pipeline from
``training/train.py`` using the JSON artifact it writes:

    TfidfVectorizer(name + " " + description) | one-hot category | verified 0/1
    | standardised images_qty  ->  LogisticRegression

``tests/unit/test_model.py`` checks that the probabilities match scikit-learn's
within 1e-9, so any change to the training pipeline must be mirrored here.

An artifact carries its decision thresholds, chosen at training time from the
precision/recall trade-off (training/thresholds.py): `threshold` (block:
`is_violation`) and, optionally, `review_threshold` below it. Its numeric
features may say how they were scaled (`{"mean", "scale"}`; a passthrough is
mean 0, scale 1), so a converted notebook pipeline (training/convert.py) is
served by the same code.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.domain.features import AdFeatures
from chalicelib.domain.verdicts import Thresholds

if TYPE_CHECKING:
    from chalicelib.serving.trees import Forest

ARTIFACT_FORMAT = 1
# Format 2: gradient-boosted trees over the same features (chalicelib/serving/trees.py).
TREES_FORMAT = 2
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "artifacts" / "model.json"

# Scored by every version before it serves (chalicelib.serving.aliases): a clear
# violation and a clean ad. The publisher records what they scored
# (chalicelib.serving.registry); a runtime that scores them differently reads the
# artifact differently, and refuses it.
PROBE_ADS = (
    AdFeatures(False, 0, 1, "iPhone 15 реплика", "Только предоплата, пишите в telegram @seller"),
    AdFeatures(True, 6, 7, "Диван угловой", "Состояние отличное, самовывоз. Торг уместен."),
)
# How far a probe may drift from the published score: float summation order only.
PROBE_TOLERANCE = 1e-9


def _sigmoid(z: float) -> float:
    # Two branches so math.exp never overflows for large |z|.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class Model:
    version: str
    threshold: float
    token_re: re.Pattern[str]
    lowercase: bool
    ngram_range: tuple[int, int]
    sublinear_tf: bool
    terms: dict[str, tuple[float, float]]  # term -> (idf, coefficient)
    category_coef: dict[int, float]
    verified_coef: float
    images_mean: float
    images_scale: float
    images_coef: float
    intercept: float
    review_threshold: float | None = None
    verified_mean: float = 0.0  # a passthrough 0/1 column unless the artifact says otherwise
    verified_scale: float = 1.0
    forest: Forest | None = None  # format 2: trees instead of coefficients

    @classmethod
    def from_artifact(cls, artifact: dict[str, Any]) -> Model:
        if artifact.get("format") not in (ARTIFACT_FORMAT, TREES_FORMAT):
            raise ValueError(f"unsupported model artifact format {artifact.get('format')!r}")
        forest = None
        if artifact["format"] == TREES_FORMAT:
            from chalicelib.serving.trees import Forest  # only a tree model's cold start pays for it

            forest = Forest.from_artifact(artifact)
        text = artifact["text"]
        coef = artifact.get("coef") or {"text": [0.0] * len(text["vocabulary"]),
                                        "category": [0.0] * len(artifact["categories"]),
                                        "is_verified_seller": 0.0, "images_qty": 0.0}
        if text["norm"] != "l2":
            raise ValueError(f"unsupported tf-idf norm {text['norm']!r}")
        low, high = text["ngram_range"]
        threshold, review = float(artifact["threshold"]), artifact.get("review_threshold")
        if not 0.0 < threshold <= 1.0 or (review is not None and not 0.0 <= float(review) < threshold):
            raise ValueError(f"thresholds out of order: review {review!r}, block {threshold!r}")
        verified = artifact.get("is_verified_seller", {"mean": 0.0, "scale": 1.0})
        return cls(
            version=artifact["version"],
            threshold=threshold,
            review_threshold=None if review is None else float(review),
            token_re=re.compile(text["token_pattern"]),  # sklearn also uses the stdlib re module
            lowercase=bool(text["lowercase"]),
            ngram_range=(int(low), int(high)),
            sublinear_tf=bool(text["sublinear_tf"]),
            terms={t: (float(i), float(c)) for t, i, c in zip(text["vocabulary"], text["idf"], coef["text"], strict=True)},
            category_coef={int(k): float(c) for k, c in zip(artifact["categories"], coef["category"], strict=True)},
            verified_coef=float(coef["is_verified_seller"]),
            images_mean=float(artifact.get("images_qty", {"mean": 0.0})["mean"]),
            images_scale=float(artifact.get("images_qty", {"scale": 1.0})["scale"]),
            images_coef=float(coef["images_qty"]),
            intercept=float(artifact.get("intercept", 0.0)),
            verified_mean=float(verified["mean"]),
            verified_scale=float(verified["scale"]),
            forest=forest,
        )

    def _ngrams(self, text: str) -> list[str]:
        return _ngrams(self.token_re, self.lowercase, self.ngram_range, text)

    def _text_terms(self, text: str) -> list[float]:
        """Contributions tfidf_j * coef_j of the in-vocabulary terms, after l2 normalisation."""
        terms = self.terms
        # Out-of-vocabulary n-grams are dropped, as in sklearn; comprehensions rather than a
        # loop with appends: this is the model's inner loop (a third of the scorer's CPU at batch 100).
        hits = [(known, count) for term, count in
                _ngram_counts(self.token_re, self.lowercase, self.ngram_range, text).items()
                if (known := terms.get(term)) is not None]
        if self.sublinear_tf:
            # 1 + log(1) is exactly 1.0 and 1.0 * idf is idf: most terms occur once, skip the log.
            weighted = [(idf if count == 1 else (1.0 + math.log(count)) * idf, c) for (idf, c), count in hits]
        else:
            weighted = [(float(count) * idf, c) for (idf, c), count in hits]
        norm = math.sqrt(math.fsum([v * v for v, _ in weighted]))
        if norm == 0.0:  # no known terms: sklearn leaves the row all-zero
            return []
        return [(v / norm) * c for v, c in weighted]

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.threshold, self.review_threshold)

    @property
    def family(self) -> str:
        return "linear" if self.forest is None else "trees"

    def logit(self, ad: AdFeatures) -> float:
        """The logit: intercept + sum of feature * coefficient, summed exactly with fsum
        (a tree model: its raw score, chalicelib/serving/trees.py)."""
        if self.forest is not None:
            counts = _ngram_counts(self.token_re, self.lowercase, self.ngram_range, ad.name + " " + ad.description)
            return self.forest.raw(self.forest.features(counts, self.sublinear_tf, ad))
        parts = self._text_terms(ad.name + " " + ad.description)
        # An unseen category gets no one-hot column, like OneHotEncoder(handle_unknown="ignore").
        parts.append(self.category_coef.get(ad.category, 0.0))
        parts.append((float(ad.is_verified_seller) - self.verified_mean) / self.verified_scale * self.verified_coef)
        parts.append((ad.images_qty - self.images_mean) / self.images_scale * self.images_coef)
        parts.append(self.intercept)
        return math.fsum(parts)

    def predict_proba(self, ads: Sequence[AdFeatures]) -> list[float]:
        """Probability of a violation for each ad. Callers validate ads (AdFeatures.validate) first."""
        return [_sigmoid(self.logit(ad)) for ad in ads]

    def predict(self, ad: AdFeatures) -> tuple[bool, float]:
        """(is_violation, probability) for one ad; a violation is probability >= threshold."""
        p = self.predict_proba([ad])[0]
        return p >= self.threshold, p

    def check_probe(self, expected: Sequence[float] | None = None) -> None:
        """Raise ValueError unless the probe ads score as finite probabilities (and,
        when the publisher recorded them, as it scored them)."""
        scores = self.predict_proba(PROBE_ADS)
        if not all(0.0 <= p <= 1.0 for p in scores):  # NaN fails this too
            raise ValueError(f"probe ads scored {scores}: not probabilities")
        if expected is not None:
            if len(expected) != len(scores):
                raise ValueError(f"{len(expected)} published probe scores for {len(scores)} probe ads")
            worst = max(abs(a - float(e)) for a, e in zip(scores, expected, strict=True))
            if worst > PROBE_TOLERANCE:
                raise ValueError(f"probe ads scored {scores}, published as {list(expected)} (off by {worst:.2g})")


def _ngrams(token_re: re.Pattern[str], lowercase: bool, ngram_range: tuple[int, int], text: str) -> list[str]:
    # Same order of operations as sklearn's word analyzer: lowercase, tokenise, join n-grams with " ".
    tokens = token_re.findall(text.lower() if lowercase else text)
    low, high = ngram_range
    if low == 1 and high == 2:  # words and word pairs, what this project trains: no slices, no joins
        return [*tokens, *[a + " " + b for a, b in itertools.pairwise(tokens)]]
    return [" ".join(tokens[i:i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]


@functools.lru_cache(maxsize=256)
def _ngram_counts(token_re: re.Pattern[str], lowercase: bool, ngram_range: tuple[int, int], text: str) -> Counter[str]:
    """The n-grams of a text, counted: remembered for the batch's last ads, so a shadow
    version that reads text the same way as the live one (every version this project
    trains) does not tokenise the batch again: that is half of scoring. Read-only."""
    return Counter(_ngrams(token_re, lowercase, ngram_range, text))


def loads(data: bytes | str) -> Model:
    """A model from the bytes of an artifact (a registry version, the packaged file)."""
    return Model.from_artifact(json.loads(data))


def _load(path: Path) -> Model:
    return loads(path.read_bytes())


@functools.lru_cache(maxsize=1)
def _load_default() -> Model:
    return _load(DEFAULT_MODEL_PATH)


def load_model(path: Path | None = None) -> Model:
    """The model at ``path``; the default artifact is parsed once per process and reused by warm Lambdas."""
    return _load_default() if path is None else _load(path)
