"""Ridge: leave-one-out R² of a ridge regression from the features to the targets (regression baseline).

Features ``X`` (N, D) are standardised per column, targets ``T`` (N, R) per column (so the score is invariant
to an affine change of any target column and to a scaling of any feature column). With an unpenalised
intercept and the centred features' thin SVD ``X = U S Vᵀ`` (rank r, ``λ = s²``), ridge with penalty α has
the hat matrix ``H = 11ᵀ/N + U diag(λ/(λ+α)) Uᵀ``, so the leave-one-out residuals are exact and cheap
(PRESS): ``e₍ᵢ₎ = (tᵢ − t̂ᵢ)/(1 − Hᵢᵢ)``. Per target ``R²_loo = 1 − Σᵢ e₍ᵢ₎² / Σᵢ (tᵢ − t̄)²``; the score is
the mean over targets, maximised over ``α ∈ N·{10⁻³, …, 10³}``. ``U`` comes from the D×D Gram when N > D,
else from the N×N one. In [−∞, 1]; higher is better.

The classification form (class labels only) regresses on the standardised one-hot class indicators. With
per-sample targets (``rank --targets ... --regression``, or caption embeddings) :func:`ridge_from_targets`
scores them instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfersel.metrics import register_metric
from transfersel.metrics._inputs import SUBSAMPLE_CAP, Inputs
from transfersel.metrics._linalg import eigh
from transfersel.metrics._regression import one_hot_targets, standardised_features, target_matrix

ALPHA_FACTORS = tuple(10.0**k for k in range(-3, 4))  # penalties α = factor·N on standardised features
EIGEN_FLOOR = 1e-10  # eigenvalues below this fraction of the largest are the null space (rank deficiency)


def principal_basis(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U, λ)`` of centred (N, D) ``X``: ``U`` (N, r) orthonormal left singular vectors, ``λ`` (r,) the
    squared singular values above the floor."""
    N, D = X.shape
    if N > D:
        w, V = eigh(X.T @ X)
        keep = w > EIGEN_FLOOR * max(w.max(), 0.0)
        return (X @ V[:, keep]) / np.sqrt(w[keep]), w[keep]
    w, U = eigh(X @ X.T)
    keep = w > EIGEN_FLOOR * max(w.max(), 0.0)
    return U[:, keep], w[keep]


def loo_r2(X: np.ndarray, T: np.ndarray, alphas: tuple[float, ...]) -> np.ndarray:
    """(len(alphas), R) leave-one-out R² per penalty and target; ``X`` (N, D) and ``T`` (N, R) centred."""
    N = len(X)
    U, lam = principal_basis(X)
    UtT, U2 = U.T @ T, U**2
    sst = (T**2).sum(axis=0)
    out = np.empty((len(alphas), T.shape[1]))
    for i, alpha in enumerate(alphas):
        shrink = lam / (lam + alpha)
        residual = T - U @ (shrink[:, None] * UtT)
        leverage = U2 @ shrink + 1.0 / N
        out[i] = 1.0 - ((residual / (1.0 - leverage)[:, None]) ** 2).sum(axis=0) / sst
    return out


def _score(X: np.ndarray, T: np.ndarray) -> float:
    alphas = tuple(f * len(X) for f in ALPHA_FACTORS)
    return float(loo_r2(X, T, alphas).mean(axis=1).max())


@register_metric(
    "ridge",
    description="Leave-one-out R² of ridge regression onto the (one-hot or per-sample) targets; ≤ 1",
    reference="transfersel regression baseline (closed-form PRESS), issue 12",
    max_rows=SUBSAMPLE_CAP,  # copies the standardised (N, D) features, forms U (N, r): a subsample
)
def ridge(inputs: Inputs) -> float:
    inputs = inputs.normalised()  # standardisation makes the score scale-free; this keeps squares finite
    return _score(standardised_features(inputs.X), one_hot_targets(inputs))


def ridge_from_targets(features: Any, targets: Any, *, device: str | None = "cpu") -> float:
    """:func:`ridge` on per-sample targets: features (N, D), targets (N, R) numbers or (K, N, D2)
    embeddings. ``device`` is accepted for the common per-sample signature (the algebra is N·D², on CPU)."""
    X = standardised_features(features)
    return _score(X, target_matrix(targets, len(X)))
