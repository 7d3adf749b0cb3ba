"""Fit the ad-moderation model and export it for the pure-Python runtime.

    python -m training.train [--n 6000] [--seed 42] [--target-precision 0.95] [--review-recall 0.9]
                             [--out chalicelib/artifacts/model.json] [--plot build/train/precision_recall.png]

Generates ``n`` ads with ``training.dataset.generate_ads(n, seed)``, holds out 25 %
(stratified, seeded), fits a scikit-learn pipeline, chooses the decision
thresholds from the held-out precision/recall trade-off (training/thresholds.py:
chosen on one half of the held-out ads, reported on the other), prints them and
the held-out metrics, draws the precision/recall curve with the chosen thresholds
(a PNG under build/, never in chalicelib/) and writes a JSON artifact that
``chalicelib.serving.model`` evaluates without scikit-learn.

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

``version`` hashes what determines the model: the parameters below (the
threshold targets included), the sklearn version, a fingerprint of the generated
data, the vocabulary and the category list. The fitted floats (and the
thresholds, which follow from them) are left out on purpose: they follow from those inputs,
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
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from chalicelib.domain.features import AdFeatures
from chalicelib.serving.model import ARTIFACT_FORMAT, DEFAULT_MODEL_PATH
from training import convert, labels, thresholds
from training.dataset import GeneratedAd, generate_ads
from training.options import DEFAULT_N, DEFAULT_REVIEW_RECALL, DEFAULT_SEED, DEFAULT_TARGET_PRECISION, add_threshold_args

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
    # training/thresholds.py: block at this precision; review down to this recall (None: no review band).
    "thresholds": {"target_precision": DEFAULT_TARGET_PRECISION, "review_recall": DEFAULT_REVIEW_RECALL},
}

# The second model family (docs/models.md#gradient-boosted-trees): the same feature
# steps, then boosted trees. "gbt" on the sparse features; "hgb" needs them dense.
FAMILIES: dict[str, dict[str, Any]] = {
    "lr": {},
    "gbt": {"gradient_boosting": {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "random_state": 0}},
    "hgb": {"hist_gradient_boosting": {"max_iter": 100, "max_leaf_nodes": 15, "learning_rate": 0.1,
                                       "early_stopping": False, "random_state": 0}},
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


def build_pipeline(family: str = "lr") -> Pipeline:
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
        # Always sparse (one code path, whatever the density); dense for
        # HistGradientBoostingClassifier, which takes nothing else.
        sparse_threshold=0.0 if family == "hgb" else 1.0,
    )
    if family == "gbt":
        classifier: Any = GradientBoostingClassifier(**FAMILIES["gbt"]["gradient_boosting"])
    elif family == "hgb":
        classifier = HistGradientBoostingClassifier(**FAMILIES["hgb"]["hist_gradient_boosting"])
    else:
        classifier = LogisticRegression(**PARAMS["logistic_regression"])
    return Pipeline([("features", features), ("model", classifier)])


def split(n: int, seed: int) -> tuple[list[GeneratedAd], list[GeneratedAd]]:
    """(training, held-out): a seeded stratified 75 / 25 % of generate_ads(n, seed)."""
    ads = generate_ads(n, seed)
    train, heldout = train_test_split(
        ads, test_size=PARAMS["test_size"], stratify=[ad.is_violation for ad in ads], random_state=seed
    )
    return list(train), list(heldout)


def fit(n: int = DEFAULT_N, seed: int = DEFAULT_SEED, family: str = "lr",
        human: Sequence[labels.HumanLabel] = ()) -> tuple[Pipeline, list[GeneratedAd]]:
    """Fit on the training split of generate_ads(n, seed), plus `human` verdicts weighted
    labels.HUMAN_WEIGHT (training/labels.py); return the pipeline and the held-out ads."""
    train, heldout = split(n, seed)
    pipeline = build_pipeline(family)
    examples = [ad.features() for ad in train] + [h.features() for h in human]
    y = np.array([int(ad.is_violation) for ad in train] + [int(h.is_violation) for h in human])
    if not human:
        pipeline.fit(ads_to_matrix(examples), y)
        return pipeline, heldout
    weights = np.array([1.0] * len(train) + [labels.HUMAN_WEIGHT] * len(human))
    pipeline.fit(ads_to_matrix(examples), y, model__sample_weight=weights)
    return pipeline, heldout


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Thresholds chosen on the calibration half of the held-out ads, metrics on its test half."""

    choice: thresholds.Choice
    metrics: dict[str, Any]
    calibration: tuple[list[int], list[float]]  # labels, probabilities
    test: tuple[list[int], list[float]]

    def plot(self, path: Path, title: str) -> Path:
        return thresholds.plot(self.calibration, self.test, self.choice, path, title)


def evaluate(predict_proba: Any, heldout: Sequence[GeneratedAd], seed: int, target_precision: float,
             review_recall: float | None) -> Evaluation:
    """Choose the thresholds and measure the model at them. `predict_proba`: ads -> probabilities."""
    calibration, test = thresholds.split(heldout, [ad.is_violation for ad in heldout], seed)
    halves = []
    for ads in (calibration, test):
        halves.append(([int(ad.is_violation) for ad in ads], [float(p) for p in predict_proba([ad.features() for ad in ads])]))
    choice = thresholds.choose(*halves[0], target_precision, review_recall)
    return Evaluation(choice, thresholds.metrics(*halves[1], choice.threshold, choice.review_threshold), halves[0], halves[1])


def sklearn_proba(pipeline: Pipeline) -> Any:
    """ads -> probabilities of a violation, from a pipeline over ads_to_matrix's columns."""
    return lambda ads: pipeline.predict_proba(ads_to_matrix(ads))[:, 1]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def dataset_fingerprint(ads: Sequence[GeneratedAd]) -> str:
    return hashlib.sha256(_canonical([dataclasses.astuple(ad) for ad in ads])).hexdigest()


def build_artifact(pipeline: Pipeline, heldout: Sequence[GeneratedAd], n: int, seed: int,
                   evaluation: Evaluation | None = None, family: str = "lr",
                   human: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything chalicelib.serving.model needs, plus metadata. Deterministic for a given fit."""
    if evaluation is None:
        targets = PARAMS["thresholds"]
        evaluation = evaluate(sklearn_proba(pipeline), heldout, seed, targets["target_precision"], targets["review_recall"])
    fields = convert.parts(pipeline)  # what the runtime computes with; refuses a pipeline it cannot serve
    vocabulary, categories = fields["text"]["vocabulary"], fields["categories"]

    all_ads = generate_ads(n, seed)
    training = {
        "n": n,
        "seed": seed,
        "dataset_sha256": dataset_fingerprint(all_ads),
        "dataset_violation_rate": round(sum(ad.is_violation for ad in all_ads) / n, 4),
        "params": PARAMS | FAMILIES[family] | {"thresholds": {"target_precision": evaluation.choice.target_precision,
                                           "review_recall": evaluation.choice.review_recall}},
    }
    if human is not None:  # hashed with the rest: labels change the model, so its version
        training["human_labels"] = human
    hashed = {
        "format": ARTIFACT_FORMAT,
        "sklearn": sklearn.__version__,
        "training": training,
        "vocabulary": vocabulary,
        "categories": categories,
    }
    prefix = "lr-" if family == "lr" else f"{family}-"
    return {
        "format": ARTIFACT_FORMAT,
        "version": prefix + hashlib.sha256(_canonical(hashed)).hexdigest()[:12],
        "threshold": evaluation.choice.threshold,
        "review_threshold": evaluation.choice.review_threshold,
        "threshold_selection": evaluation.choice.as_json(),
        **fields,
        "training": training,
        "metrics": {"heldout": evaluation.metrics},
        "library_versions": {
            "python": platform.python_version(),
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
    }


def from_pipeline(pipeline: Any, *, source: str, source_sha256: str | None, target_precision: float,
                  review_recall: float | None, data_fingerprint: str | None = None) -> tuple[dict[str, Any], Evaluation]:
    """The artifact of a pipeline fitted elsewhere (a data scientist's notebook):
    converted (training/convert.py), checked against the pipeline's own
    probabilities, thresholds chosen and metrics measured on this project's
    held-out ads (their data is not ours to know: `data_fingerprint`, if given,
    is recorded as the training data's)."""
    fields = convert.parts(pipeline)
    _, heldout = split(DEFAULT_N, DEFAULT_SEED)
    probability = lambda ads: pipeline.predict_proba(convert.pipeline_input(pipeline, ads))[:, 1]  # noqa: E731
    evaluation = evaluate(probability, heldout, DEFAULT_SEED, target_precision, review_recall)
    thresholds_ = {"threshold": evaluation.choice.threshold, "review_threshold": evaluation.choice.review_threshold}
    artifact = {"format": ARTIFACT_FORMAT, "version": convert.content_version(fields | thresholds_), **thresholds_,
                "threshold_selection": evaluation.choice.as_json(), **fields}
    from chalicelib.serving.model import Model

    worst = convert.verify(pipeline, Model.from_artifact(artifact), [ad.features() for ad in heldout])
    sklearn_version = getattr(pipeline, "_sklearn_version", sklearn.__version__)
    artifact |= {
        "training": {"source": source, **({"source_sha256": source_sha256} if source_sha256 else {}),
                     "dataset_sha256": data_fingerprint,
                     "evaluated_on": f"generate_ads({DEFAULT_N}, {DEFAULT_SEED}) held-out split",
                     "conversion_max_abs_diff": worst},
        "metrics": {"heldout": evaluation.metrics},
        "library_versions": {"sklearn": sklearn_version, "python": platform.python_version()},
    }
    return artifact, evaluation


def render(artifact: dict[str, Any]) -> bytes:
    """An artifact's bytes, as `make train` writes them and the registry stores them."""
    return (json.dumps(artifact, ensure_ascii=False, indent=1) + "\n").encode()


def train(n: int, seed: int, target_precision: float, review_recall: float | None,
          family: str = "lr", human: Sequence[labels.HumanLabel] | None = None) -> tuple[dict[str, Any], Evaluation]:
    """Fit and export with these targets: (artifact, evaluation). `family`: lr, gbt or hgb. `human`:
    moderators' verdicts (training/labels.py), split by ad: the train side is fitted on, the test
    side measures the model's agreement with people."""
    human_train, human_test = labels.split(human or [], seed)
    pipeline, heldout = fit(n, seed, family, human_train)
    evaluation = evaluate(sklearn_proba(pipeline), heldout, seed, target_precision, review_recall)
    summary = None
    if human is not None:
        from chalicelib.domain.verdicts import Thresholds, decide

        cut = Thresholds(evaluation.choice.threshold, evaluation.choice.review_threshold)
        probabilities = sklearn_proba(pipeline)([h.features() for h in human_test]) if human_test else []
        summary = {"n": len(human), "train": len(human_train), "test": len(human_test), "weight": labels.HUMAN_WEIGHT,
                   "sha256": labels.fingerprint(human),
                   "test_agreement": labels.agreement(human_test, [decide(float(p), cut) for p in probabilities])}
    artifact = build_artifact(pipeline, heldout, n, seed, evaluation, family, human=summary)
    if family != "lr":  # the trees' conversion checked against scikit-learn, as a notebook pipeline's is
        from chalicelib.serving.model import Model

        artifact["training"]["conversion_max_abs_diff"] = convert.verify(
            pipeline, Model.from_artifact(artifact), [ad.features() for ad in heldout])
    return artifact, evaluation


def report(artifact: dict[str, Any]) -> str:
    """The thresholds and the held-out metrics, as `make train` and `make model-publish` print them."""
    m, sel = artifact["metrics"]["heldout"], artifact.get("threshold_selection") or {}
    review = artifact.get("review_threshold")
    lines = [f"thresholds (chosen on the held-out calibration half for precision >= {sel.get('target_precision')}"
             + (f", review down to recall {sel.get('review_recall')}" if review is not None else "") + "):",
             f"  block  p >= {artifact['threshold']}" + (f"\n  review {review} <= p < {artifact['threshold']}"
                                                        if review is not None else "  (no review band)"),
             f"held-out test half ({m['size']} ads, violation rate {m['violation_rate']:.2%}):"]
    for name in ("roc_auc", "precision", "recall", "f1", "accuracy", "block_rate", "review_rate", "review_or_block_recall"):
        if name in m:
            lines.append(f"  {name:<22} {m[name]:.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="number of generated ads")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="dataset and split seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH, help="artifact path")
    parser.add_argument("--human-labels", metavar="DATABASE_URL",
                        help="add the moderators' verdicts of this database as labels (docs/reviews.md)")
    add_threshold_args(parser)
    args = parser.parse_args(argv)

    human = labels.load(args.human_labels) if args.human_labels else None
    try:
        artifact, evaluation = train(args.n, args.seed, args.target_precision, args.review_recall, human=human)
    except thresholds.ThresholdError as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    print(f"dataset: n={args.n} seed={args.seed} violation rate={artifact['training']['dataset_violation_rate']:.2%}")
    print(report(artifact))
    if human is not None:
        h = artifact["training"]["human_labels"]
        agree = "n/a" if h["test_agreement"] is None else f"{h['test_agreement']:.1%}"
        print(f"human labels: {h['n']} ({h['train']} trained on, weight {h['weight']}; {h['test']} held out by ad, "
              f"agreement {agree})")
    plot = evaluation.plot(args.plot, f"{artifact['version']}: precision/recall and the chosen thresholds")
    print(f"wrote {plot}")

    data = render(artifact)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data) / 1024:.1f} KB, {len(artifact['text']['vocabulary'])} terms), "
          f"version {artifact['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
