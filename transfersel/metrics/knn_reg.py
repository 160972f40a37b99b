"""kNN regression: leave-one-out R² of the mean of the k nearest neighbours' targets (regression baseline).

Neighbours as in :mod:`transfersel.metrics.knn`: cosine similarity of the centred, L2-normalised features,
each sample's own row excluded (exact search). Targets ``T`` (N, R) are standardised per column; the
prediction of sample i is the unweighted mean of its k neighbours' rows, ``t̂ᵢ = (1/k) Σ_{j∈nn(i)} t_j``, and
the score is the mean over targets of ``R² = 1 − Σᵢ (tᵢ − t̂ᵢ)² / Σᵢ (tᵢ − t̄)²``. Invariant to an affine
change of any target column and to a scaling of the features. In [−∞, 1]; higher is better.

The classification form (class labels only) averages the neighbours' standardised one-hot indicators (a
Brier-type score of the kNN class frequencies); :func:`knn_reg_from_targets` scores per-sample targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfersel.errors import InputError
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import SUBSAMPLE_CAP, Inputs, _check_float_matrix
from transfersel.metrics._linalg import row_blocks
from transfersel.metrics._regression import one_hot_targets, r2_per_target, target_matrix
from transfersel.metrics.knn import leave_one_out_neighbours


def _cosine_rows(features: Any) -> np.ndarray:
    """(N, D) float32 C-contiguous centred, L2-normalised rows (a row at the mean stays at the origin)."""
    X = _check_float_matrix(features, "features")
    mean = sum(B.sum(axis=0) for _, B in row_blocks(X)) / len(X)
    out = np.empty(X.shape, dtype=np.float32)
    for rows, B in row_blocks(X):
        B -= mean
        B /= np.maximum(np.abs(B).max(axis=1, keepdims=True), np.finfo(np.float64).tiny)  # no overflow
        norms = np.linalg.norm(B, axis=1, keepdims=True)
        out[rows] = B / np.where(norms > 0, norms, 1.0)
    return out


def _score(features: Any, T: np.ndarray, k: int) -> float:
    if k < 1:
        raise InputError(f"knn_reg needs k ≥ 1, got k={k}")
    k = min(k, len(T) - 1)
    I, _ = leave_one_out_neighbours(_cosine_rows(features), k, "cosine")
    return float(r2_per_target(T[I].mean(axis=1), T).mean())


@register_metric(
    "knn_reg",
    description="Leave-one-out R² of k-NN regression (cosine, mean of k neighbours) onto the targets; ≤ 1",
    reference="transfersel regression baseline after spec §2.11's kNN, issue 12",
    max_rows=SUBSAMPLE_CAP,  # the exact neighbour search cannot stream: a seeded stratified subsample
)
def knn_reg(inputs: Inputs, *, k: int = 10) -> float:
    return _score(inputs.X, one_hot_targets(inputs), k)


def knn_reg_from_targets(features: Any, targets: Any, *, k: int = 10, device: str | None = "cpu") -> float:
    """:func:`knn_reg` on per-sample targets: features (N, D), targets (N, R) numbers or (K, N, D2)
    embeddings. ``device`` is accepted for the common per-sample signature (the search runs on CPU)."""
    X = _check_float_matrix(features, "features")
    return _score(X, target_matrix(targets, len(X)), k)
