"""Shared pieces of the metrics that score real-valued targets (ridge, knn_reg): target validation, the
one-hot targets of their classification form, feature standardisation and R².

Targets are ``T`` (N, R) float64: regression values, the per-sample label embeddings of captions flattened
over their channels (K, N, D2) -> (N, K·D2), or one-hot class indicators. Every column is standardised
(ddof 0) before use, so the scores are invariant to an affine change ``t -> a·t + b`` (a ≠ 0) of any column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfersel.errors import InputError
from transfersel.metrics._inputs import Inputs, _check_float_matrix, to_numpy
from transfersel.metrics._linalg import row_blocks

STD_FLOOR = 1e-12  # a feature column with a smaller sd is constant: left centred, not divided


def target_matrix(targets: Any, n_rows: int) -> np.ndarray:
    """(N, R) float64 standardised columns of ``targets`` (N, R) or (K, N, D2); all-zero and constant
    columns (the zero padding of narrower embedding channels) are dropped."""
    T = np.asarray(to_numpy(targets, "targets"), dtype=np.float64)
    if T.ndim == 3:
        T = T.transpose(1, 0, 2).reshape(T.shape[1], -1)
    if T.ndim != 2 or len(T) != n_rows or T.size == 0:
        raise InputError(f"targets must be (N, R) or (K, N, D2) with N = {n_rows} rows, got {T.shape}")
    if not np.isfinite(T).all():
        raise InputError("targets contain NaN or inf; drop or impute those samples")
    sd = T.std(axis=0)
    keep = sd > 0
    if not keep.any():
        raise InputError("every target column is constant; pass targets that vary across samples")
    return (T[:, keep] - T[:, keep].mean(axis=0)) / sd[keep]


def one_hot_targets(inputs: Inputs) -> np.ndarray:
    """(N, C) standardised class indicators: the classification form of a regression metric."""
    O = np.zeros((inputs.N, inputs.C))
    O[np.arange(inputs.N), inputs.y] = 1.0
    return target_matrix(O, inputs.N)


def standardised_features(features: Any) -> np.ndarray:
    """(N, D) float64 copy of ``features`` with every column centred and scaled to unit sd (ddof 0)."""
    X = _check_float_matrix(features, "features")
    out = np.empty(X.shape, dtype=np.float64)
    for rows, B in row_blocks(X):
        out[rows] = B
    out -= out.mean(axis=0)
    sd = out.std(axis=0)
    out /= np.where(sd > STD_FLOOR, sd, 1.0)
    return out


def r2_per_target(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column, ``1 − Σ(t − p)² / Σ(t − t̄)²``: (N, R), (N, R) -> (R,).

    1 is a perfect fit, 0 predicting the mean, negative worse than that. Invariant to one affine change
    ``t -> a·t + b`` (a ≠ 0) applied to both arguments, so it can be computed in standardised units.
    """
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    sse = ((truth - pred) ** 2).sum(axis=0)
    sst = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - sse / sst
