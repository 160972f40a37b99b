"""Linear-probe baseline (spec §2.12) against scikit-learn's LogisticRegression on the same folds."""

from __future__ import annotations

import numpy as np
import pytest

from transfersel.metrics import get_metric
from transfersel.metrics.linear import stratified_folds


def sklearn_probe(X: np.ndarray, y: np.ndarray, fold: np.ndarray, pca_dims: int) -> float:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    acc = []
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        model = make_pipeline(
            StandardScaler(),
            PCA(min(pca_dims, X.shape[1], int(tr.sum()))),
            LogisticRegression(C=1.0, max_iter=500),
        )
        acc.append(model.fit(X[tr], y[tr]).score(X[te], y[te]))
    return float(np.mean(acc))


@pytest.mark.parametrize("name, pca_dims", [("small_gauss", 256), ("relu_gauss", 32), ("wide_random", 256)])
def test_agrees_with_sklearn_on_the_same_folds(vectors, name, pca_dims):
    v = vectors[name]
    X, y = v["features"], v["labels"]
    s = get_metric("linear")(X, y, pca_dims=pca_dims)
    assert abs(s - sklearn_probe(X, y, stratified_folds(y, 5, 0), pca_dims)) <= 0.005


def test_folds_are_stratified_and_seeded(vectors):
    y = vectors["mid_gauss"]["labels"]
    fold = stratified_folds(y, 5, 0)
    per_class = np.array([np.bincount(fold[y == c], minlength=5) for c in range(y.max() + 1)])
    assert per_class.max() - per_class.min() <= 1
    assert not np.array_equal(fold, stratified_folds(y, 5, 1))
