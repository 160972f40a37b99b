"""kNN baseline (spec §2.11) against a brute-force NumPy leave-one-out k-NN."""

from __future__ import annotations

import numpy as np
import pytest

from transfersel.errors import InputError
from transfersel.metrics import get_metric


def brute_force_knn(X: np.ndarray, y: np.ndarray, k: int, metric: str, balanced: bool) -> float:
    X = X.astype(np.float64)
    if metric == "cosine":
        X = X - X.mean(axis=0)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        sim = X @ X.T
    else:
        sim = -((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(sim, -np.inf)
    C = y.max() + 1
    pred = np.empty(len(y), dtype=int)
    for i in range(len(y)):
        nn = np.argsort(-sim[i], kind="stable")[:k]
        votes = np.bincount(y[nn], minlength=C)
        summed = np.bincount(y[nn], weights=sim[i, nn], minlength=C)
        # most votes, then larger summed similarity, then smaller class index
        pred[i] = min(np.flatnonzero(votes == votes.max()), key=lambda c: (-summed[c], c))
    correct = pred == y
    if balanced:
        return float(np.mean([correct[y == c].mean() for c in range(C)]))
    return float(correct.mean())


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("k", [1, 4, 10])
def test_knn_equals_brute_force(vectors, metric, k):
    v = vectors["small_gauss"]
    X, y = v["features"][:300], v["labels"][:300]
    for balanced in (False, True):
        s = get_metric("knn")(X, y, k=k, metric=metric, balanced=balanced)
        assert s == pytest.approx(brute_force_knn(X, y, k, metric, balanced), abs=1e-12)


def test_knn_tie_breaks_and_duplicates():
    # Two classes, k = 2: every sample sees one neighbour of each class, so the vote is tied and the
    # larger summed similarity decides; an exact duplicate of a sample must not count as itself.
    X = np.array([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [-0.9, -0.1], [0.0, 1.0]])
    y = np.array([0, 1, 1, 0, 0, 1])
    for balanced in (False, True):
        s = get_metric("knn")(X, y, k=2, balanced=balanced)
        assert s == pytest.approx(brute_force_knn(X, y, 2, "cosine", balanced), abs=1e-12)


def test_knn_k_is_capped_and_options_validated(vectors):
    v = vectors["wide_random"]
    X, y = v["features"][:12], v["labels"][:12]
    assert get_metric("knn")(X, y, k=50) == pytest.approx(brute_force_knn(X, y, 11, "cosine", False))
    with pytest.raises(InputError, match="cosine"):
        get_metric("knn")(X, y, metric="manhattan")
