"""Linear-probe baseline: cross-validated multinomial logistic regression accuracy (spec §2.12)."""

from __future__ import annotations

import numpy as np
import scipy.optimize

from transfersel.errors import InputError
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import SUBSAMPLE_CAP, Inputs
from transfersel.metrics._linalg import eigh, gram, matmul_rows, softmax_rows, stratified_permutation

MAX_ITER = 200
GTOL = 1e-6


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) fold index of every sample: shuffled, and each class spread evenly over the folds."""
    fold = np.empty(len(y), dtype=np.int64)
    fold[stratified_permutation(y, seed)] = np.arange(len(y)) % folds
    return fold


def standardised_pca(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(μ, W)`` such that ``(X − μ) W`` are the top-``k`` PCA scores of the standardised ``X``.

    Standardisation (ddof 0, constant columns unscaled) is folded into ``W = V / σ``, so neither
    the standardised nor a float64 copy of ``X`` is formed.
    """
    mu = X.mean(axis=0, dtype=np.float64)
    G = gram(X, shift=mu)
    sd = np.sqrt(np.diag(G) / X.shape[0])
    sd = np.where(sd > 10 * np.finfo(np.float64).eps, sd, 1.0)
    _, V = eigh(G / np.outer(sd, sd))
    return mu, V[:, ::-1][:, :k] / sd[:, None]


def fit_logistic(Z: np.ndarray, y: np.ndarray, C: int, C_reg: float) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression minimising ``mean CE + ‖W‖² / (2·C_reg·N)`` (bias unpenalised),
    by L-BFGS in float64. Returns ``(W (d, C), b (C,))``."""
    N, d = Z.shape
    O = np.zeros((N, C))
    O[np.arange(N), y] = 1.0
    lam = 1.0 / (C_reg * N)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: d * C].reshape(d, C), theta[d * C :]
        logits = Z @ W + b
        lse = np.logaddexp.reduce(logits, axis=1)
        loss = float((lse - logits[O == 1]).mean() + 0.5 * lam * (W * W).sum())
        G = (softmax_rows(logits) - O) / N
        return loss, np.concatenate([(Z.T @ G + lam * W).ravel(), G.sum(axis=0)])

    res = scipy.optimize.minimize(
        loss_grad,
        np.zeros(d * C + C),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": MAX_ITER, "gtol": GTOL},
    )
    return res.x[: d * C].reshape(d, C), res.x[d * C :]


@register_metric(
    "linear",
    max_rows=SUBSAMPLE_CAP,  # the algorithm cannot stream: a seeded stratified subsample above it
    description="5-fold CV accuracy of an L2 logistic regression on standardised PCA features; in [0, 1]",
    reference="transfersel baseline (spec §2.12); agrees with sklearn LogisticRegression(C=1.0)",
)
def linear(
    inputs: Inputs, *, folds: int = 5, seed: int = 0, pca_dims: int | None = 256, C_reg: float = 1.0
) -> float:
    if not 2 <= folds <= inputs.N:
        raise InputError(f"linear needs 2 ≤ folds ≤ N = {inputs.N}, got folds={folds}")
    if C_reg <= 0:
        raise InputError(f"linear C_reg must be positive, got {C_reg}")
    X, y = inputs.normalised().X, inputs.y  # standardised features: invariant to the scale
    k = inputs.D if pca_dims is None else min(inputs.D, pca_dims)
    fold = stratified_folds(y, folds, seed)
    accuracies = []
    for f in range(folds):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        X_train = X[train]
        mu, P = standardised_pca(X_train, min(k, len(train)))  # fitted on the training fold only
        W, b = fit_logistic(matmul_rows(X_train, P, shift=mu), y[train], inputs.C, C_reg)
        pred = (matmul_rows(X[test], P, shift=mu) @ W + b).argmax(axis=1)
        accuracies.append(np.mean(pred == y[test]))
    return float(np.mean(accuracies))
