"""Fit the ad-moderation model and export it for the pure-Python runtime.

    python -m training.train [--n 6000] [--seed 42] [--out chalicelib/artifacts/model.json]

Generates ``n`` ads with ``training.dataset.generate_ads(n, seed)``, holds out 25 %
(stratified, seeded), fits a scikit-learn pipeline, prints held-out metrics and
writes a JSON artifact that ``chalicelib.model`` evaluates without scikit-learn.

Pipeline (the feature order is the order of the coefficients in the artifact):
  1. text: TfidfVectorizer on ``name + " " + description`` (lowercase, pinned token
     pattern, word uni- and bigrams, ``min_df``, sublinear tf, l2 norm);
  2. category: OneHotEncoder(handle_unknown="ignore");
  3. is_verified_seller: 0/1 passthrough;
  4. images_qty: StandardScaler;
  then LogisticRegression (lbfgs, tight tolerance).

Reproducibility: the same (n, seed) gives a byte-identical artifact on a given
machine (no timestamps). The vocabulary is limited with ``min_df`` rather than
``max_features`` because the latter breaks ties between equally frequent terms
with numpy's unstable argsort, whose order can differ between CPUs.

``version`` hashes what determines the model: the parameters below, the sklearn
version, a fingerprint of the generated data, the vocabulary and the category
list. The fitted floats are left out on purpose: they follow from those inputs,
but their last bits may differ between CPUs/BLAS builds, which would make the
version (and the stale-artifact test) platform-dependent. The parity test compares
probabilities, which covers the floats.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from chalicelib.features import AdFeatures
from chalicelib.model import ARTIFACT_FORMAT, DEFAULT_MODEL_PATH
from training.dataset import GeneratedAd, generate_ads

DEFAULT_N = 6000
DEFAULT_SEED = 42

# Everything that shapes the model besides the data. Recorded in the artifact and hashed.
PARAMS: dict[str, Any] = {
    "text": {
        "fields": ["name", "description"],
        "separator": " ",
        "lowercase": True,
        "token_pattern": r"(?u)\b\w\w+\b",
        "ngram_range": [1, 2],
        "min_df": 5,
        "sublinear_tf": True,
        "smooth_idf": True,
        "norm": "l2",
    },
    "category": {"handle_unknown": "ignore"},
    "images_qty": {"scaler": "standard"},
    # Tight tol: lbfgs runs to the optimum instead of stopping early, so refits on
    # other CPUs land on the same coefficients up to rounding noise.
    "logistic_regression": {"C": 10.0, "solver": "lbfgs", "tol": 1e-10, "max_iter": 5000, "random_state": 0},
    "test_size": 0.25,
    "threshold": 0.5,
}

# Column indices of the matrix built by ads_to_matrix.
_TEXT, _CATEGORY, _VERIFIED, _IMAGES = 0, 1, 2, 3


def ads_to_matrix(ads: Sequence[AdFeatures]) -> np.ndarray:
    """The pipeline's input: one object row per ad (text, category, verified 0/1, images)."""
    sep = PARAMS["text"]["separator"]
    rows = [[ad.name + sep + ad.description, ad.category, int(ad.is_verified_seller), ad.images_qty] for ad in ads]
    matrix = np.empty((len(rows), 4), dtype=object)
    matrix[:] = rows
    return matrix


def build_pipeline() -> Pipeline:
    text = PARAMS["text"]
    features = ColumnTransformer(
        [
            ("text", TfidfVectorizer(
                lowercase=text["lowercase"],
                token_pattern=text["token_pattern"],
                ngram_range=tuple(text["ngram_range"]),
                min_df=text["min_df"],
                sublinear_tf=text["sublinear_tf"],
                smooth_idf=text["smooth_idf"],
                norm=text["norm"],
                dtype=np.float64,
            ), _TEXT),
            ("category", OneHotEncoder(handle_unknown=PARAMS["category"]["handle_unknown"]), [_CATEGORY]),
            ("is_verified_seller", "passthrough", [_VERIFIED]),
            ("images_qty", StandardScaler(), [_IMAGES]),
        ],
        sparse_threshold=1.0,  # always sparse: one code path, whatever the density
    )
    return Pipeline([("features", features), ("model", LogisticRegression(**PARAMS["logistic_regression"]))])


def fit(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> tuple[Pipeline, list[GeneratedAd]]:
    """Fit on a seeded stratified 75 % of generate_ads(n, seed); return the pipeline and the held-out ads."""
    ads = generate_ads(n, seed)
    train, heldout = train_test_split(
        ads, test_size=PARAMS["test_size"], stratify=[ad.is_violation for ad in ads], random_state=seed
    )
    pipeline = build_pipeline()
    pipeline.fit(ads_to_matrix([ad.features() for ad in train]), np.array([int(ad.is_violation) for ad in train]))
    return pipeline, heldout


def evaluate(pipeline: Pipeline, ads: Sequence[GeneratedAd]) -> dict[str, float]:
    y = np.array([int(ad.is_violation) for ad in ads])
    proba = pipeline.predict_proba(ads_to_matrix([ad.features() for ad in ads]))[:, 1]
    predicted = (proba >= PARAMS["threshold"]).astype(int)
    metrics = {
        "roc_auc": roc_auc_score(y, proba),
        "precision": precision_score(y, predicted, zero_division=0),
        "recall": recall_score(y, predicted, zero_division=0),
        "f1": f1_score(y, predicted, zero_division=0),
        "accuracy": accuracy_score(y, predicted),
        "violation_rate": float(y.mean()),
    }
    # Rounded so the artifact does not churn on last-bit float differences.
    return {name: round(float(value), 4) for name, value in metrics.items()} | {"size": len(ads)}


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def dataset_fingerprint(ads: Sequence[GeneratedAd]) -> str:
    return hashlib.sha256(_canonical([dataclasses.astuple(ad) for ad in ads])).hexdigest()


def build_artifact(pipeline: Pipeline, heldout: Sequence[GeneratedAd], n: int, seed: int) -> dict[str, Any]:
    """Everything chalicelib.model needs, plus metadata. Deterministic for a given fit."""
    features: ColumnTransformer = pipeline.named_steps["features"]
    tfidf: TfidfVectorizer = features.named_transformers_["text"]
    onehot: OneHotEncoder = features.named_transformers_["category"]
    scaler: StandardScaler = features.named_transformers_["images_qty"]
    lr: LogisticRegression = pipeline.named_steps["model"]

    vocabulary = [str(term) for term in tfidf.get_feature_names_out()]  # column order
    categories = [int(c) for c in onehot.categories_[0]]
    coef = [float(c) for c in lr.coef_[0]]
    n_text, n_cat = len(vocabulary), len(categories)
    if len(coef) != n_text + n_cat + 2:
        raise AssertionError(f"unexpected feature layout: {len(coef)} coefficients")

    all_ads = generate_ads(n, seed)
    training = {
        "n": n,
        "seed": seed,
        "dataset_sha256": dataset_fingerprint(all_ads),
        "dataset_violation_rate": round(sum(ad.is_violation for ad in all_ads) / n, 4),
        "params": PARAMS,
    }
    hashed = {
        "format": ARTIFACT_FORMAT,
        "sklearn": sklearn.__version__,
        "training": training,
        "vocabulary": vocabulary,
        "categories": categories,
    }
    text = PARAMS["text"]
    return {
        "format": ARTIFACT_FORMAT,
        "version": "lr-" + hashlib.sha256(_canonical(hashed)).hexdigest()[:12],
        "threshold": PARAMS["threshold"],
        "text": {
            "lowercase": text["lowercase"],
            "token_pattern": text["token_pattern"],
            "ngram_range": text["ngram_range"],
            "sublinear_tf": text["sublinear_tf"],
            "norm": text["norm"],
            "vocabulary": vocabulary,
            "idf": [float(v) for v in tfidf.idf_],
        },
        "categories": categories,
        "images_qty": {"mean": float(scaler.mean_[0]), "scale": float(scaler.scale_[0])},
        "feature_order": ["text", "category", "is_verified_seller", "images_qty"],
        "coef": {
            "text": coef[:n_text],
            "category": coef[n_text:n_text + n_cat],
            "is_verified_seller": coef[n_text + n_cat],
            "images_qty": coef[n_text + n_cat + 1],
        },
        "intercept": float(lr.intercept_[0]),
        "training": training,
        "metrics": {"heldout": evaluate(pipeline, heldout)},
        "library_versions": {
            "python": platform.python_version(),
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="number of generated ads")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="dataset and split seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH, help="artifact path")
    args = parser.parse_args(argv)

    pipeline, heldout = fit(args.n, args.seed)
    artifact = build_artifact(pipeline, heldout, args.n, args.seed)
    metrics = artifact["metrics"]["heldout"]
    print(f"dataset: n={args.n} seed={args.seed} violation rate={artifact['training']['dataset_violation_rate']:.2%}")
    print(f"held-out ({metrics['size']} ads, violation rate {metrics['violation_rate']:.2%}), "
          f"threshold {artifact['threshold']}:")
    for name in ("roc_auc", "precision", "recall", "f1", "accuracy"):
        print(f"  {name:<9} {metrics[name]:.4f}")

    text = json.dumps(artifact, ensure_ascii=False, indent=1) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()) / 1024:.1f} KB, {len(artifact['text']['vocabulary'])} terms), "
          f"version {artifact['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
