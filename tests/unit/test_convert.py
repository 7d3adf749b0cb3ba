"""A data scientist's pickled Pipeline -> the runtime artifact (training/convert.py,
training/train.py from_pipeline), and the thresholds (training/thresholds.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.feature_selection import SelectKBest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from chalicelib.serving.model import Model
from training import convert, thresholds, train
from training.convert import UnsupportedPipeline
from training.dataset import generate_ads

ADS = generate_ads(900, 3)
FEATURES = [ad.features() for ad in ADS]
LABELS = np.array([int(ad.is_violation) for ad in ADS])


def notebook_pipeline(*, text: object = None, category: object = None, numeric: list | None = None,
                      extra_steps: list | None = None, classifier: object = None) -> Pipeline:
    """A pipeline like a notebook would fit over train.ads_to_matrix's columns."""
    features = ColumnTransformer([
        ("text", text or TfidfVectorizer(ngram_range=(1, 2), min_df=2), 0),
        ("category", category or OneHotEncoder(handle_unknown="ignore"), [1]),
        *(numeric if numeric is not None else [("numbers", StandardScaler(), [2, 3])]),
    ])
    pipeline = Pipeline([("features", features), *(extra_steps or []),
                         ("model", classifier or LogisticRegression(C=3.0, max_iter=2000))])
    return pipeline.fit(train.ads_to_matrix(FEATURES), LABELS)


def served(pipeline: Pipeline) -> Model:
    fields = convert.parts(pickle.loads(pickle.dumps(pipeline)))  # through a pickle, as it arrives
    return Model.from_artifact({"format": 1, "version": convert.content_version(fields), "threshold": 0.5, **fields})


@pytest.mark.parametrize("shape", ["scaled numerics", "passthrough numerics", "no numerics", "idf off, sublinear, unigrams"])
def test_supported_pipelines_score_exactly_as_scikit_learn(shape: str) -> None:
    kwargs: dict = {
        "scaled numerics": {},
        "passthrough numerics": {"numeric": [("verified", "passthrough", [2]), ("images", StandardScaler(with_mean=False), [3])]},
        "no numerics": {"numeric": []},
        "idf off, sublinear, unigrams": {"text": TfidfVectorizer(use_idf=False, sublinear_tf=True, lowercase=False)},
    }[shape]
    pipeline = notebook_pipeline(**kwargs)
    probe = generate_ads(300, 11)
    worst = convert.verify(pipeline, served(pipeline), [ad.features() for ad in probe])
    assert worst <= 1e-9


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"numeric": [("images", MinMaxScaler(), [3])]}, "unsupported transformer MinMaxScaler"),
    ({"text": TfidfVectorizer(stop_words=["и", "the"])}, r"TfidfVectorizer\(stop_words="),
    ({"text": CountVectorizer()}, "unsupported transformer CountVectorizer"),
    ({"category": OneHotEncoder(drop="first")}, r"OneHotEncoder\(drop='first'\)"),
    ({"extra_steps": [("select", SelectKBest(k=50))]}, "unsupported step 'select' \\(SelectKBest\\)"),
    ({"numeric": [("text again", StandardScaler(), [1])]}, "only is_verified_seller, images_qty are numeric"),
])
def test_an_unsupported_step_is_named(kwargs: dict, error: str) -> None:
    with pytest.raises(UnsupportedPipeline, match=error):
        convert.parts(notebook_pipeline(**kwargs))


def test_not_a_pipeline_or_not_binary_is_refused() -> None:
    with pytest.raises(UnsupportedPipeline, match="expected a scikit-learn Pipeline, got LogisticRegression"):
        convert.parts(LogisticRegression())
    three = notebook_pipeline()
    three.named_steps["model"].classes_ = np.array([0, 1, 2])
    with pytest.raises(UnsupportedPipeline, match="expected a binary 0/1 classifier"):
        convert.parts(three)


def test_a_notebook_pipeline_becomes_a_publishable_artifact() -> None:
    pipeline = notebook_pipeline()
    artifact, evaluation = train.from_pipeline(pipeline, source="nb.pkl", source_sha256="ab" * 32, target_precision=0.9,
                                               review_recall=0.8, data_fingerprint="cafe")
    model = Model.from_artifact(artifact)
    assert artifact["version"].startswith("lr-") and artifact["training"]["dataset_sha256"] == "cafe"
    assert model.threshold == evaluation.choice.threshold and model.review_threshold == evaluation.choice.review_threshold
    assert artifact["metrics"]["heldout"]["precision"] >= 0.8 and artifact["training"]["conversion_max_abs_diff"] <= 1e-9
    again, _ = train.from_pipeline(pipeline, source="nb.pkl", source_sha256="ab" * 32, target_precision=0.9,
                                   review_recall=0.8)
    assert again["version"] == artifact["version"]  # the same model, the same version


def test_thresholds_meet_the_precision_target_with_the_most_recall() -> None:
    y = [0, 0, 0, 1, 0, 1, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    choice = thresholds.choose(y, p, target_precision=0.99, review_recall=0.9, min_flagged=1)
    assert choice.threshold == 0.5  # the lowest cut with no false positive above it
    assert choice.review_threshold == 0.35  # the highest cut that still catches 90 % of violations
    assert thresholds.choose(y, p, 0.99, None, min_flagged=1).review_threshold is None
    with pytest.raises(thresholds.ThresholdError, match="no threshold flagging at least 1 calibration ads"):
        thresholds.choose([1, 0], [0.2, 0.9], 0.99, None, min_flagged=1)
    # A precision met only by a few top ads is noise: such cuts are not considered.
    assert thresholds.choose(y, p, 0.99, None, min_flagged=5).threshold == 0.5
    with pytest.raises(thresholds.ThresholdError, match=r"best 0.857, at p >= 0.3500"):
        thresholds.choose(y, p, 0.99, None, min_flagged=6)
    m = thresholds.metrics(y, p, choice.threshold, choice.review_threshold)
    assert (m["precision"], m["recall"], m["review_rate"]) == (1.0, round(5 / 6, 4), 0.2)
