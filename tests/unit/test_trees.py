"""The second model family: gradient-boosted trees converted at publish time and
evaluated in pure Python, against scikit-learn's predict_proba on 1,000 ads."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from chalicelib.domain.features import AdFeatures
from chalicelib.domain.verdicts import BLOCK, REVIEW, decide
from chalicelib.serving.aliases import Followed
from chalicelib.serving.model import PROBE_ADS, TREES_FORMAT, load_model, loads
from training import convert, train
from training.dataset import generate_ads

SAME_MODEL = 1e-9


@pytest.fixture(scope="module")
def ads() -> list[AdFeatures]:
    """1,000 ads the models were not fitted on (another seed), and edge cases."""
    edge = [AdFeatures(False, 0, 99, "", ""), AdFeatures(True, 10**4, -3, "!!! ??", "..."),
            AdFeatures(False, 1, 1, "iPhone iPhone iPhone", "telegram telegram telegram @seller")]
    return [ad.features() for ad in generate_ads(1000 - len(edge), 20260)] + edge


def _fitted(family: str, n: int, **params: object) -> tuple[object, dict]:
    training, heldout = train.split(n, train.DEFAULT_SEED)
    pipeline = train.build_pipeline(family).set_params(**params)
    pipeline.fit(train.ads_to_matrix([ad.features() for ad in training]), [int(ad.is_violation) for ad in training])
    evaluation = train.evaluate(train.sklearn_proba(pipeline), heldout, train.DEFAULT_SEED, 0.95, 0.8)
    return pipeline, train.build_artifact(pipeline, heldout, n, train.DEFAULT_SEED, evaluation, family)


@pytest.fixture(scope="module")
def gbt() -> tuple[object, dict]:
    return _fitted("gbt", train.DEFAULT_N)


@pytest.fixture(scope="module")
def hgb() -> tuple[object, dict]:
    # Dense features, a histogram per feature per iteration: a smaller fit keeps this test quick.
    return _fitted("hgb", 3000, model__max_iter=30)


@pytest.mark.parametrize("family", ["gbt", "hgb"])
def test_trees_match_sklearn_on_1000_ads(family: str, ads: list[AdFeatures], request: pytest.FixtureRequest) -> None:
    pipeline, artifact = request.getfixturevalue(family)
    model = loads(train.render(artifact))
    assert (artifact["format"], model.family, model.version.startswith(f"{family}-")) == (TREES_FORMAT, "trees", True)
    expected = pipeline.predict_proba(train.ads_to_matrix(ads))[:, 1]
    actual = model.predict_proba(ads)
    assert len(actual) == 1000
    worst = max(abs(a - float(e)) for a, e in zip(actual, expected, strict=True))
    assert worst <= SAME_MODEL, worst
    # Not a constant model: the trees split the ads.
    assert np.std(actual) > 0.1


@pytest.mark.parametrize("family", ["gbt", "hgb"])
def test_trees_get_thresholds_and_a_review_band(family: str, request: pytest.FixtureRequest) -> None:
    _, artifact = request.getfixturevalue(family)
    model = loads(train.render(artifact))
    thresholds = model.thresholds
    assert thresholds.review is not None and 0 < thresholds.review < thresholds.block <= 1
    assert artifact["metrics"]["heldout"]["precision"] >= 0.75  # chosen for 0.95 on the calibration half
    scores = model.predict_proba(list(PROBE_ADS))
    assert decide(scores[0], thresholds) in (BLOCK, REVIEW) and scores[0] > scores[1]
    model.check_probe(scores)


def test_a_notebook_tree_pipeline_converts_and_verifies(gbt: tuple[object, dict]) -> None:
    pipeline, _ = gbt
    artifact, _ = train.from_pipeline(pickle.loads(pickle.dumps(pipeline)), source="test", source_sha256="0",
                                      target_precision=0.95, review_recall=0.8)
    assert artifact["version"].startswith("gbt-") and artifact["training"]["conversion_max_abs_diff"] <= SAME_MODEL


def test_tree_models_serve_through_the_registry_reader(gbt: tuple[object, dict]) -> None:
    """A tree version followed like a linear one (the probe check included)."""
    from tests.unit.test_serving import Clock, FakeS3

    _, artifact = gbt
    s3 = FakeS3()
    s3.point(live=s3.publish(train.render(artifact)))
    followed = Followed(s3, load_model, function="score", check_seconds=60, shadow=True, clock=Clock())
    assert followed.snapshot().live.version == artifact["version"]


def test_unsupported_tree_settings_are_named(gbt: tuple[object, dict]) -> None:
    pipeline, _ = gbt
    exponential = pickle.loads(pickle.dumps(pipeline))
    exponential.steps[-1][1].loss = "exponential"
    with pytest.raises(convert.UnsupportedPipeline, match="only 'log_loss'"):
        convert.parts(exponential)


def test_a_bare_estimator_names_the_supported_shapes_and_the_docs() -> None:
    for bare in (LogisticRegression(), GradientBoostingClassifier()):
        with pytest.raises(convert.UnsupportedPipeline) as err:
            convert.parts(bare)
        message = str(err.value)
        assert "expected a scikit-learn Pipeline" in message and "GradientBoostingClassifier" in message
        assert "docs/models.md#wrap-a-bare-estimator-in-a-pipeline" in message


def test_a_tree_model_imports_no_numeric_library(gbt: tuple[object, dict], tmp_path) -> None:
    _, artifact = gbt
    path = tmp_path / "trees.json"
    path.write_bytes(train.render(artifact))
    code = (f"import sys, json; from chalicelib.serving.model import PROBE_ADS, load_model; from pathlib import Path; "
            f"m = load_model(Path({str(path)!r})); m.predict_proba(PROBE_ADS); "
            "bad = [x for x in ('sklearn', 'numpy', 'scipy') if x in sys.modules]; print(json.dumps(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
