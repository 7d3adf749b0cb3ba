"""A fitted gradient-boosted-trees classifier -> the tree artifact's fields
(chalicelib/serving/trees.py reads them, without scikit-learn).

Supported (binary 0/1, after the feature steps training/convert.py reads):
    GradientBoostingClassifier      loss "log_loss"; sparse or dense input (its trees compare float32)
    HistGradientBoostingClassifier  loss "log_loss", numeric splits only (no categorical_features);
                                    dense input only, as scikit-learn itself requires (a ColumnTransformer
                                    with sparse_threshold=0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

from chalicelib.serving.trees import LEAF
from training.errors import UnsupportedPipeline


class UnsupportedTrees(UnsupportedPipeline):
    pass


def _gbc(model: GradientBoostingClassifier, name: str, width: int) -> dict[str, Any]:
    if model.loss != "log_loss":
        raise UnsupportedTrees(f"step {name!r}: GradientBoostingClassifier(loss={model.loss!r}); only 'log_loss'")
    if model.estimators_.shape[1] != 1:
        raise UnsupportedTrees(f"step {name!r}: {model.estimators_.shape[1]} trees per stage; expected a binary model")
    # The init estimator's raw score (a prior's log-odds, or 0 for init="zero"): it ignores the features.
    init = float(model._raw_predict_init(np.zeros((1, width), dtype=np.float32))[0, 0])
    trees = []
    for stage in model.estimators_[:, 0]:
        t = stage.tree_
        leaf = t.children_left == -1
        trees.append([
            [LEAF if is_leaf else int(f) for f, is_leaf in zip(t.feature, leaf, strict=True)],
            [0.0 if is_leaf else float(x) for x, is_leaf in zip(t.threshold, leaf, strict=True)],
            [0 if is_leaf else int(x) for x, is_leaf in zip(t.children_left, leaf, strict=True)],
            [0 if is_leaf else int(x) for x, is_leaf in zip(t.children_right, leaf, strict=True)],
            # scikit-learn adds learning_rate * value: the same product, computed once here.
            [float(model.learning_rate * v) if is_leaf else 0.0 for v, is_leaf in zip(t.value[:, 0, 0], leaf, strict=True)],
        ])
    return {"estimator": "GradientBoostingClassifier", "float32": True, "init": init, "trees": trees,
            "learning_rate": float(model.learning_rate)}


def _hgb(model: HistGradientBoostingClassifier, name: str) -> dict[str, Any]:
    if model.loss != "log_loss" or model.n_trees_per_iteration_ != 1:
        raise UnsupportedTrees(f"step {name!r}: HistGradientBoostingClassifier must be a binary log_loss model")
    if model.is_categorical_ is not None and bool(np.any(model.is_categorical_)):
        raise UnsupportedTrees(f"step {name!r}: HistGradientBoostingClassifier with categorical_features "
                               "is not supported (one-hot encode the category instead)")
    trees = []
    for [predictor] in model._predictors:  # the fitted trees have no public accessor
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        trees.append([
            [LEAF if is_leaf else int(f) for f, is_leaf in zip(nodes["feature_idx"], leaf, strict=True)],
            [0.0 if is_leaf else float(x) for x, is_leaf in zip(nodes["num_threshold"], leaf, strict=True)],
            [0 if is_leaf else int(x) for x, is_leaf in zip(nodes["left"], leaf, strict=True)],
            [0 if is_leaf else int(x) for x, is_leaf in zip(nodes["right"], leaf, strict=True)],
            [float(v) if is_leaf else 0.0 for v, is_leaf in zip(nodes["value"], leaf, strict=True)],
        ])
    return {"estimator": "HistGradientBoostingClassifier", "float32": False,
            "init": float(np.ravel(model._baseline_prediction)[0]), "trees": trees,
            "learning_rate": float(model.learning_rate)}


def tree_fields(model: Any, name: str, where: dict[str, int], width: int) -> dict[str, Any]:
    """{"classifier": ..., "features": ...} of a fitted boosted-trees classifier."""
    n_features = getattr(model, "n_features_in_", width)
    if n_features != width:
        raise UnsupportedTrees(f"the transformers give {width} features, step {name!r} was fitted on {n_features}")
    if isinstance(model, GradientBoostingClassifier):
        classifier = _gbc(model, name, width)
    elif isinstance(model, HistGradientBoostingClassifier):
        classifier = _hgb(model, name)
    else:
        raise UnsupportedTrees(f"step {name!r}: {type(model).__name__} is not a supported tree model")
    return {"classifier": {"kind": "trees", **classifier}, "features": where}
