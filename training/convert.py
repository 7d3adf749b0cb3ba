"""A fitted scikit-learn Pipeline -> the runtime artifact's model (chalicelib/serving/model.py's format).

The Lambda never imports scikit-learn, so a pipeline is served by translating its
fitted parameters into the JSON the pure-Python model reads. Supported, the shape
training/train.py fits (and a notebook fitting the same kind of model would):

    Pipeline([..., ColumnTransformer([...]), LogisticRegression])   (None / "passthrough" steps are skipped)

    ColumnTransformer transformers, on the input columns
        text (position 0), category (1), is_verified_seller (2), images_qty (3)
    by position (training/train.py's ads_to_matrix) or by those names (a pandas DataFrame):
        TfidfVectorizer on text     word analyzer, l2 norm; no stop words, accent stripping,
                                    custom tokenizer or preprocessor, binary tf
        OneHotEncoder on category   integer categories, no `drop`, no infrequent-category grouping;
                                    an unseen category scores as all zeros (handle_unknown="ignore")
        "passthrough" or StandardScaler on is_verified_seller / images_qty
        "drop"
    LogisticRegression              binary, classes 0/1 (or False/True): class 1 is a violation

Anything else is refused with an error naming the step. `verify` then scores ads
with both the pipeline and the converted model and refuses a conversion whose
probabilities differ by more than 1e-9.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from chalicelib.domain.features import AdFeatures
from chalicelib.serving.model import TREES_FORMAT, Model
from training.errors import UnsupportedPipeline
from training.trees import tree_fields

COLUMNS = ("text", "category", "is_verified_seller", "images_qty")
NUMERIC = ("is_verified_seller", "images_qty")
TOLERANCE = 1e-9


def _describe(step: Any) -> str:
    return step if isinstance(step, str) else type(step).__name__


def _columns(spec: Any, where: str) -> list[str]:
    """The input columns a transformer reads, as COLUMNS names."""
    items = [spec] if isinstance(spec, int | str | np.integer) else list(np.ravel(spec))
    names = []
    for item in items:
        if isinstance(item, int | np.integer) and 0 <= int(item) < len(COLUMNS):
            names.append(COLUMNS[int(item)])
        elif isinstance(item, str) and item in COLUMNS:
            names.append(item)
        else:
            raise UnsupportedPipeline(f"{where} reads column {item!r}; the runtime has {', '.join(COLUMNS)} "
                                      "(or positions 0-3 in that order)")
    return names


def _text(tfidf: TfidfVectorizer, where: str) -> dict[str, Any]:
    problems = [f"{name}={value!r}" for name, value, ok in (
        ("analyzer", tfidf.analyzer, "word"), ("tokenizer", tfidf.tokenizer, None),
        ("preprocessor", tfidf.preprocessor, None), ("stop_words", tfidf.stop_words, None),
        ("strip_accents", tfidf.strip_accents, None), ("binary", tfidf.binary, False), ("norm", tfidf.norm, "l2"),
        ("input", tfidf.input, "content"),
    ) if value != ok]
    if problems:
        raise UnsupportedPipeline(f"{where}: TfidfVectorizer({', '.join(problems)}) is not supported")
    vocabulary = [term for term, _ in sorted(tfidf.vocabulary_.items(), key=lambda kv: kv[1])]
    idf = [float(v) for v in tfidf.idf_] if tfidf.use_idf else [1.0] * len(vocabulary)
    return {"lowercase": bool(tfidf.lowercase), "token_pattern": tfidf.token_pattern,
            "ngram_range": [int(x) for x in tfidf.ngram_range], "sublinear_tf": bool(tfidf.sublinear_tf),
            "norm": "l2", "vocabulary": [str(t) for t in vocabulary], "idf": idf}


def _categories(onehot: OneHotEncoder, where: str) -> list[int]:
    if onehot.drop is not None:
        raise UnsupportedPipeline(f"{where}: OneHotEncoder(drop={onehot.drop!r}) is not supported (use drop=None)")
    if any(c is not None for c in getattr(onehot, "infrequent_categories_", [None])):
        raise UnsupportedPipeline(f"{where}: OneHotEncoder with infrequent-category grouping is not supported")
    [categories] = onehot.categories_
    if not all(float(c).is_integer() for c in categories):
        raise UnsupportedPipeline(f"{where}: OneHotEncoder categories must be integers, got {list(categories)[:5]}")
    return [int(c) for c in categories]


SUPPORTED_SHAPES = ("Pipeline([('features', ColumnTransformer([...])), ('model', LogisticRegression "
                    "| GradientBoostingClassifier | HistGradientBoostingClassifier)])")
CLASSIFIERS = (LogisticRegression, GradientBoostingClassifier, HistGradientBoostingClassifier)
WRAP_DOCS = "docs/models.md#wrap-a-bare-estimator-in-a-pipeline"


def _shape(pipeline: Any) -> tuple[ColumnTransformer, str, Any]:
    """(the ColumnTransformer, the classifier's step name, the classifier) of a supported pipeline."""
    if not isinstance(pipeline, Pipeline):
        raise UnsupportedPipeline(f"expected a scikit-learn Pipeline, got {_describe(pipeline)}; supported: "
                                  f"{SUPPORTED_SHAPES}, over the columns {', '.join(COLUMNS)}. How to wrap a fitted "
                                  f"estimator's features in one: {WRAP_DOCS}")
    steps = [(name, step) for name, step in pipeline.steps if step not in (None, "passthrough")]
    kinds = [type(step) for _, step in steps]
    if len(kinds) != 2 or kinds[0] is not ColumnTransformer or kinds[1] not in CLASSIFIERS:
        unexpected = [f"{name!r} ({_describe(step)})" for name, step in steps
                      if type(step) not in (ColumnTransformer, *CLASSIFIERS)]
        raise UnsupportedPipeline("unsupported step " + (", ".join(unexpected) if unexpected else
                                  f"order {[_describe(s) for _, s in steps]}")
                                  + ": expected ColumnTransformer then LogisticRegression, GradientBoostingClassifier "
                                  "or HistGradientBoostingClassifier")
    (_, features), (name, classifier) = steps
    if [str(c) for c in classifier.classes_] not in (["0", "1"], ["False", "True"]):
        raise UnsupportedPipeline(f"step {name!r}: {_describe(classifier)} classes {list(classifier.classes_)}; "
                                  "expected a binary 0/1 classifier (1: violation)")
    return features, name, classifier


def _layout(features: ColumnTransformer) -> tuple[dict[str, Any], dict[str, int], int]:
    """What the feature steps compute (text, categories, numeric scaling), where each
    feature lands in the classifier's input ({"text": offset, "category": offset,
    numeric: index}) and how many features there are."""
    out: dict[str, Any] = {"categories": []}
    numeric = {name: {"mean": 0.0, "scale": 1.0} for name in NUMERIC}
    where: dict[str, int] = {}
    offset = 0
    # Fitted, a "passthrough" is a FunctionTransformer; the unfitted list says what it was.
    declared = {name: step for name, step, _ in features.transformers} | {"remainder": features.remainder}
    for name, step, spec in features.transformers_:
        here = f"ColumnTransformer step {name!r}"
        if isinstance(declared.get(name), str):
            step = declared[name]
        if step == "drop" or (isinstance(spec, list | tuple | np.ndarray) and len(spec) == 0):
            continue
        columns = _columns(spec, here)
        if isinstance(step, TfidfVectorizer):
            if columns != ["text"] or not isinstance(spec, int | str | np.integer):
                raise UnsupportedPipeline(f"{here}: TfidfVectorizer must read the text column alone, as a scalar "
                                          f"(0 or 'text'), got {spec!r}")
            if "text" in out:
                raise UnsupportedPipeline(f"{here}: a second TfidfVectorizer")
            out["text"] = _text(step, here)
            where["text"] = offset
            width = len(out["text"]["vocabulary"])
        elif isinstance(step, OneHotEncoder):
            if columns != ["category"] or out["categories"]:
                raise UnsupportedPipeline(f"{here}: OneHotEncoder must read the category column only, once")
            out["categories"] = _categories(step, here)
            where["category"] = offset
            width = len(out["categories"])
        elif step == "passthrough" or type(step) is StandardScaler:
            if not set(columns) <= set(NUMERIC):
                raise UnsupportedPipeline(f"{here}: {_describe(step)} of {columns}; only {', '.join(NUMERIC)} are numeric")
            for i, column in enumerate(columns):
                if column in where:
                    raise UnsupportedPipeline(f"{here}: column {column!r} is used twice")
                where[column] = offset + i
                if isinstance(step, StandardScaler):
                    numeric[column]["mean"] = float(step.mean_[i]) if step.with_mean else 0.0
                    numeric[column]["scale"] = float(step.scale_[i]) if step.with_std else 1.0
            width = len(columns)
        else:
            raise UnsupportedPipeline(f"{here}: unsupported transformer {_describe(step)} "
                                      "(supported: TfidfVectorizer, OneHotEncoder, StandardScaler, 'passthrough', 'drop')")
        offset += width
    if "text" not in out:
        raise UnsupportedPipeline("no TfidfVectorizer on the text column")
    out |= numeric
    return out, where, offset


def parts(pipeline: Any) -> dict[str, Any]:
    """The artifact's model fields of a fitted pipeline: text, categories, numerics and
    coef/intercept (linear), or classifier/features (trees, format 2)."""
    features, name, classifier = _shape(pipeline)
    fields, where, width = _layout(features)
    if isinstance(classifier, LogisticRegression):
        return _linear(fields, where, width, name, classifier)
    return {"format": TREES_FORMAT, **fields, **tree_fields(classifier, name, where, width)}


def _linear(fields: dict[str, Any], where: dict[str, int], width: int, name: str, lr: LogisticRegression) -> dict[str, Any]:
    if lr.coef_.shape[0] != 1:
        raise UnsupportedPipeline(f"step {name!r}: LogisticRegression with {lr.coef_.shape[0]} rows of coefficients; "
                                  "expected a binary 0/1 classifier (1: violation)")
    coef = [float(c) for c in lr.coef_[0]]
    if width != len(coef):
        raise UnsupportedPipeline(f"the transformers give {width} features, the classifier has {len(coef)} coefficients")
    text_at, vocabulary = where["text"], fields["text"]["vocabulary"]
    out: dict[str, Any] = {"categories": fields["categories"], "coef": {
        "text": coef[text_at:text_at + len(vocabulary)],
        "category": coef[where["category"]:where["category"] + len(fields["categories"])] if "category" in where else []}}
    out["text"] = fields["text"]
    for column in NUMERIC:
        out["coef"][column] = coef[where[column]] if column in where else 0.0
        out[column] = fields[column]
    out["intercept"] = float(lr.intercept_[0]) if lr.fit_intercept else 0.0
    return out


def content_version(fields: dict[str, Any]) -> str:
    """A version id for a converted pipeline: a hash of what the runtime will compute with
    ("lr-" a linear model, "gbt-" boosted trees)."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    prefix = "gbt-" if fields.get("format") == TREES_FORMAT else "lr-"
    return prefix + hashlib.sha256(canonical).hexdigest()[:12]


def pipeline_input(pipeline: Pipeline, ads: Sequence[AdFeatures]) -> Any:
    """The ads in the shape the pipeline was fitted on: columns by position, or a DataFrame by name."""
    features = next(step for _, step in pipeline.steps if isinstance(step, ColumnTransformer))
    rows = [[ad.name + " " + ad.description, ad.category, int(ad.is_verified_seller), ad.images_qty] for ad in ads]
    if all(isinstance(spec, int | np.integer) or (not isinstance(spec, str) and all(isinstance(c, int | np.integer)
           for c in np.ravel(spec))) for _, _, spec in features.transformers):
        matrix = np.empty((len(rows), len(COLUMNS)), dtype=object)
        matrix[:] = rows
        return matrix
    try:
        import pandas as pd
    except ImportError as exc:
        raise UnsupportedPipeline("this pipeline reads columns by name: pandas is needed to check it") from exc
    return pd.DataFrame(rows, columns=list(COLUMNS))


def verify(pipeline: Pipeline, model: Model, ads: Sequence[AdFeatures]) -> float:
    """The largest difference between the pipeline's and the converted model's
    probabilities on `ads`; raises UnsupportedPipeline above TOLERANCE."""
    expected = pipeline.predict_proba(pipeline_input(pipeline, ads))[:, 1]
    actual = model.predict_proba(ads)
    worst = max(abs(a - float(e)) for a, e in zip(actual, expected, strict=True))
    if worst > TOLERANCE:
        raise UnsupportedPipeline(f"the converted model differs from the pipeline by {worst:.3g} (> {TOLERANCE}): "
                                  "a step does something the runtime does not reproduce")
    return worst
