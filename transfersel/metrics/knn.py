"""kNN baseline: leave-one-out k-nearest-neighbour accuracy (spec §2.11; arXiv 2503.18528)."""

from __future__ import annotations

import numpy as np

from transfersel.errors import InputError
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import SUBSAMPLE_CAP, Inputs
from transfersel.metrics._linalg import row_blocks


def _search_features(inputs: Inputs, metric: str) -> np.ndarray:
    """(N, D) float32 C-contiguous copy for faiss: centred and L2-normalised (cosine), or as is (l2)."""
    out = np.empty(inputs.X.shape, dtype=np.float32)
    for rows, B in row_blocks(inputs.X):
        if metric == "cosine":
            B -= inputs.mean
            norms = np.linalg.norm(B, axis=1, keepdims=True)
            B /= np.where(norms > 0, norms, 1.0)  # a sample at the mean stays at the origin
        out[rows] = B
    return out


def leave_one_out_neighbours(F: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest neighbours of every row of ``F`` among the other rows.

    Returns ``(I, S)``, both (N, k): neighbour indices and similarities (inner product for cosine,
    minus the squared distance for l2), nearest first. Each row's own index is removed from its
    k + 1 hits; if it is absent (duplicates tied with it), the last hit is dropped instead.
    """
    import faiss

    N = F.shape[0]
    index = faiss.IndexFlatIP(F.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(F.shape[1])
    index.add(F)
    dist, I = index.search(F, k + 1)
    S = dist.astype(np.float64) if metric == "cosine" else -dist.astype(np.float64)
    drop = I == np.arange(N)[:, None]
    drop[~drop.any(axis=1), -1] = True
    keep = ~drop
    return I[keep].reshape(N, k), S[keep].reshape(N, k)


def majority_vote(labels: np.ndarray, sims: np.ndarray, C: int) -> np.ndarray:
    """(N,) winning class per row of neighbour ``labels`` (N, k): most votes, then the larger summed
    similarity, then the smaller class index."""
    N = labels.shape[0]
    rows = np.repeat(np.arange(N), labels.shape[1])
    votes = np.zeros((N, C))
    np.add.at(votes, (rows, labels.ravel()), 1.0)
    summed = np.zeros((N, C))
    np.add.at(summed, (rows, labels.ravel()), sims.ravel())
    tied = votes == votes.max(axis=1, keepdims=True)
    summed = np.where(tied, summed, -np.inf)
    best = tied & (summed == summed.max(axis=1, keepdims=True))
    return best.argmax(axis=1)  # first True: the smallest class index among the remaining ties


@register_metric(
    "knn",
    max_rows=SUBSAMPLE_CAP,  # the algorithm cannot stream: a seeded stratified subsample above it
    description="Leave-one-out k-NN accuracy on centred, L2-normalised features; in [0, 1]",
    reference="transfersel baseline (spec §2.11), after arXiv 2503.18528",
)
def knn(inputs: Inputs, *, k: int = 10, metric: str = "cosine", balanced: bool = False) -> float:
    if metric not in ("cosine", "l2"):
        raise InputError(f"knn metric must be 'cosine' or 'l2', got {metric!r}")
    if k < 1:
        raise InputError(f"knn needs k ≥ 1, got k={k}")
    k = min(k, inputs.N - 1)
    inputs = inputs.normalised()  # neighbours of centred, normalised rows do not depend on the scale
    I, S = leave_one_out_neighbours(_search_features(inputs, metric), k, metric)
    pred = majority_vote(inputs.y[I], S, inputs.C)
    correct = pred == inputs.y
    if balanced:
        return float(np.mean(np.bincount(inputs.y, weights=correct, minlength=inputs.C) / inputs.counts))
    return float(correct.mean())
