"""Gradient-boosted trees, evaluated in pure Python (chalicelib/serving/model.py's second family).

A tree artifact (format 2, written by training/convert.py) has the linear
artifact's feature steps (TF-IDF of name + description, one-hot category, the two
numerics) and, instead of coefficients, where each feature sits in the
classifier's input and the fitted trees:

    "classifier": {"kind": "trees", "estimator": "GradientBoostingClassifier" | "HistGradientBoostingClassifier",
                   "float32": bool, "init": raw score before the first tree,
                   "trees": [[feature...], [threshold...], [left...], [right...], [value...]], ...}
    "features":   {"text": offset, "category": offset, "is_verified_seller": index, "images_qty": index}

A node whose feature is -1 is a leaf; `value` is what it adds to the raw score
(the learning rate already applied, as scikit-learn applies it). The raw score is
the logit: probability = sigmoid(init + sum of the leaves reached, added in tree order).

To match scikit-learn within 1e-9, the features are computed as scikit-learn
computes them: the TF-IDF row normalised in the vocabulary's order with a plain
running sum (not fsum), and, for GradientBoostingClassifier, every value rounded
to float32 (its trees compare float32 inputs; HistGradientBoostingClassifier
compares float64). tests/unit/test_trees.py checks it against predict_proba on
1,000 ads.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

from chalicelib.domain.features import AdFeatures

LEAF = -1
ESTIMATORS = ("GradientBoostingClassifier", "HistGradientBoostingClassifier")


class Tree(NamedTuple):
    feature: list[int]
    threshold: list[float]
    left: list[int]
    right: list[int]
    value: list[float]


class Forest(NamedTuple):
    """A boosted-trees classifier over the artifact's features."""

    estimator: str
    float32: bool
    init: float
    trees: tuple[Tree, ...]
    terms: dict[str, tuple[int, float]]  # term -> (feature index, idf)
    categories: dict[int, int]  # category -> feature index
    verified: tuple[int, float, float] | None  # (feature index, mean, scale); None: dropped
    images: tuple[int, float, float] | None

    @classmethod
    def from_artifact(cls, artifact: Mapping[str, Any]) -> Forest:
        clf, where = artifact["classifier"], artifact["features"]
        if clf.get("kind") != "trees" or clf.get("estimator") not in ESTIMATORS:
            raise ValueError(f"unsupported classifier {clf.get('kind')!r} {clf.get('estimator')!r}")
        trees = []
        for raw in clf["trees"]:
            tree = Tree([int(f) for f in raw[0]], [float(t) for t in raw[1]], [int(x) for x in raw[2]],
                        [int(x) for x in raw[3]], [float(v) for v in raw[4]])
            n = len(tree.feature)
            # Children come after their parent (as scikit-learn numbers them): every walk ends.
            if not n or any(len(part) != n for part in tree) or not all(
                    (f == LEAF) or (i < left < n and i < right < n) for i, (f, left, right) in
                    enumerate(zip(tree.feature, tree.left, tree.right, strict=True))):
                raise ValueError("a tree's arrays disagree or point outside it")
            trees.append(tree)
        text = artifact["text"]
        offset = int(where["text"])
        terms = {t: (offset + i, float(idf)) for i, (t, idf) in enumerate(zip(text["vocabulary"], text["idf"], strict=True))}
        cat_offset = where.get("category")
        categories = ({} if cat_offset is None else
                      {int(c): int(cat_offset) + i for i, c in enumerate(artifact["categories"])})

        def numeric(name: str) -> tuple[int, float, float] | None:
            index = where.get(name)
            if index is None:
                return None
            scaling = artifact.get(name, {"mean": 0.0, "scale": 1.0})
            return int(index), float(scaling["mean"]), float(scaling["scale"])

        return cls(str(clf["estimator"]), bool(clf["float32"]), float(clf["init"]), tuple(trees), terms, categories,
                   numeric("is_verified_seller"), numeric("images_qty"))

    def features(self, counts: Counter[str], sublinear: bool, ad: AdFeatures) -> dict[int, float]:
        """The ad's non-zero features by index, as the classifier reads them."""
        known = sorted((self.terms[t][0], self.terms[t][1], n) for t, n in counts.items() if t in self.terms)
        values = [(1.0 + math.log(n) if sublinear else float(n)) * idf for _, idf, n in known]
        square_sum = 0.0
        for v in values:  # scikit-learn's normalisation: a running sum in column order
            square_sum += v * v
        norm = math.sqrt(square_sum)
        indices = [i for i, _, _ in known]
        if norm != 0.0:
            values = [v / norm for v in values]
        if (cat := self.categories.get(ad.category)) is not None:
            indices.append(cat)
            values.append(1.0)
        for spec, raw in ((self.verified, float(ad.is_verified_seller)), (self.images, float(ad.images_qty))):
            if spec is not None:
                indices.append(spec[0])
                values.append((raw - spec[1]) / spec[2])
        if self.float32:
            values = array("f", values).tolist()
        return dict(zip(indices, values, strict=True))

    def raw(self, x: dict[int, float]) -> float:
        """init + the leaves the ad reaches, summed in tree order as scikit-learn sums them."""
        total = self.init
        get = x.get
        for feature, threshold, left, right, value in self.trees:
            node = 0
            while (f := feature[node]) != LEAF:
                node = left[node] if get(f, 0.0) <= threshold[node] else right[node]
            total += value[node]
        return total


def describe(forest: Forest) -> str:
    depth = max((_depth(t) for t in forest.trees), default=0)
    return f"{forest.estimator}: {len(forest.trees)} trees, depth <= {depth}"


def _depth(tree: Tree, node: int = 0) -> int:
    if tree.feature[node] == LEAF:
        return 0
    return 1 + max(_depth(tree, tree.left[node]), _depth(tree, tree.right[node]))

