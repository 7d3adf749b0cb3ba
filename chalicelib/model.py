"""Score ads with the exported logistic-regression model, in pure Python.

The Lambda must not import scikit-learn, scipy or numpy (package size, cold
starts), so this module re-implements the fitted pipeline from
``training/train.py`` using the JSON artifact it writes:

    TfidfVectorizer(name + " " + description) | one-hot category | verified 0/1
    | standardised images_qty  ->  LogisticRegression

``tests/unit/test_model.py`` checks that the probabilities match scikit-learn's
within 1e-9, so any change to the training pipeline must be mirrored here.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.features import AdFeatures

ARTIFACT_FORMAT = 1
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "artifacts" / "model.json"


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

    @classmethod
    def from_artifact(cls, artifact: dict[str, Any]) -> Model:
        if artifact.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"unsupported model artifact format {artifact.get('format')!r}")
        text, coef = artifact["text"], artifact["coef"]
        if text["norm"] != "l2":
            raise ValueError(f"unsupported tf-idf norm {text['norm']!r}")
        low, high = text["ngram_range"]
        return cls(
            version=artifact["version"],
            threshold=float(artifact["threshold"]),
            token_re=re.compile(text["token_pattern"]),  # sklearn also uses the stdlib re module
            lowercase=bool(text["lowercase"]),
            ngram_range=(int(low), int(high)),
            sublinear_tf=bool(text["sublinear_tf"]),
            terms={t: (float(i), float(c)) for t, i, c in zip(text["vocabulary"], text["idf"], coef["text"], strict=True)},
            category_coef={int(k): float(c) for k, c in zip(artifact["categories"], coef["category"], strict=True)},
            verified_coef=float(coef["is_verified_seller"]),
            images_mean=float(artifact["images_qty"]["mean"]),
            images_scale=float(artifact["images_qty"]["scale"]),
            images_coef=float(coef["images_qty"]),
            intercept=float(artifact["intercept"]),
        )

    def _ngrams(self, text: str) -> list[str]:
        # Same order of operations as sklearn's word analyzer: lowercase, tokenise, join n-grams with " ".
        tokens = self.token_re.findall(text.lower() if self.lowercase else text)
        low, high = self.ngram_range
        return [" ".join(tokens[i:i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]

    def _text_terms(self, text: str) -> list[float]:
        """Contributions tfidf_j * coef_j of the in-vocabulary terms, after l2 normalisation."""
        weighted: list[tuple[float, float]] = []  # (tf * idf, coef)
        terms, sublinear = self.terms, self.sublinear_tf
        for term, count in Counter(self._ngrams(text)).items():
            known = terms.get(term)
            if known is not None:  # out-of-vocabulary n-grams are dropped, as in sklearn
                idf, c = known
                # 1 + log(1) is exactly 1.0: most terms occur once, skip the log.
                tf = (1.0 + math.log(count) if count > 1 else 1.0) if sublinear else float(count)
                weighted.append((tf * idf, c))
        norm = math.sqrt(math.fsum([v * v for v, _ in weighted]))
        if norm == 0.0:  # no known terms: sklearn leaves the row all-zero
            return []
        return [(v / norm) * c for v, c in weighted]

    def decision(self, ad: AdFeatures) -> float:
        """The logit: intercept + sum of feature * coefficient, summed exactly with fsum."""
        parts = self._text_terms(ad.name + " " + ad.description)
        # An unseen category gets no one-hot column, like OneHotEncoder(handle_unknown="ignore").
        parts.append(self.category_coef.get(ad.category, 0.0))
        parts.append(float(ad.is_verified_seller) * self.verified_coef)
        parts.append((ad.images_qty - self.images_mean) / self.images_scale * self.images_coef)
        parts.append(self.intercept)
        return math.fsum(parts)

    def predict_proba(self, ads: Sequence[AdFeatures]) -> list[float]:
        """Probability of a violation for each ad. Callers validate ads (AdFeatures.validate) first."""
        return [_sigmoid(self.decision(ad)) for ad in ads]

    def predict(self, ad: AdFeatures) -> tuple[bool, float]:
        """(is_violation, probability) for one ad; a violation is probability >= threshold."""
        p = self.predict_proba([ad])[0]
        return p >= self.threshold, p


def _load(path: Path) -> Model:
    with path.open(encoding="utf-8") as f:
        return Model.from_artifact(json.load(f))


@functools.lru_cache(maxsize=1)
def _load_default() -> Model:
    return _load(DEFAULT_MODEL_PATH)


def load_model(path: Path | None = None) -> Model:
    """The model at ``path``; the default artifact is parsed once per process and reused by warm Lambdas."""
    return _load_default() if path is None else _load(path)
