"""The numpy-only linear probes (logistic for classes, ridge for regression targets) and accuracy helpers
shared by finetune (linear mode), ensemble, demo and the regression benchmark."""

from __future__ import annotations

import numpy as np

from transfersel.metrics import stratified_permutation

__all__ = ["accuracy", "linear_probe_accuracy", "ridge_probe_r2", "split_validation"]


def split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_rows, val_rows)``: about ``fraction`` of every class (at least one sample of a
    class with two or more) is held out."""
    perm = stratified_permutation(labels, seed)
    val = []
    for c in np.unique(labels):
        rows = perm[labels[perm] == c]
        k = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if len(rows) > 1 else 0
        val.extend(rows[:k])
    val_rows = np.sort(np.array(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), val_rows), val_rows


def accuracy(pred: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    """Top-1 accuracy in %, or mean per-class accuracy when ``y``'s classes are imbalanced (spec §5.4)."""
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if counts.min() == counts.max():
        return float(np.mean(pred == y) * 100), "top1"
    per_class = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    return float(np.mean(per_class) * 100), "mean_per_class"


def linear_probe_accuracy(
    fit_features: np.ndarray,
    fit_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    *,
    C: float,
) -> tuple[float, str]:
    """Accuracy (%) on the eval set of an L2 logistic regression (``C`` as in scikit-learn, bias free)
    fitted on standardised fit features (mean/sd of the fit set)."""
    from transfersel.metrics.linear import fit_logistic

    X = np.asarray(fit_features, dtype=np.float64)
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    W, b = fit_logistic((X - mu) / sd, fit_labels, int(max(fit_labels.max(), eval_labels.max())) + 1, C)
    pred = (((np.asarray(eval_features, dtype=np.float64) - mu) / sd) @ W + b).argmax(axis=1)
    return accuracy(pred, eval_labels)


def ridge_probe_r2(
    fit_features: np.ndarray,
    fit_targets: np.ndarray,
    eval_features: np.ndarray,
    eval_targets: np.ndarray,
    *,
    alphas: tuple[float, ...],
) -> np.ndarray:
    """(len(alphas), R) R² on the eval set of ridge regressions (penalty α each, unpenalised intercept) fitted
    on the fit features standardised with the fit set's mean/sd, to the (N, R) targets.

    One eigendecomposition ``XᵀX = V diag(w) Vᵀ`` serves every α: ``β = V diag(1/(w + α)) Vᵀ XᵀT``.
    """
    from transfersel.metrics._regression import r2_per_target

    X = np.asarray(fit_features, dtype=np.float64)
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    X = (X - mu) / sd
    E = (np.asarray(eval_features, dtype=np.float64) - mu) / sd
    T = np.asarray(fit_targets, dtype=np.float64)
    t_mean = T.mean(axis=0)
    w, V = np.linalg.eigh(X.T @ X)
    VtXtT = V.T @ (X.T @ (T - t_mean))
    EV = E @ V
    return np.stack([r2_per_target(EV @ (VtXtT / (w + a)[:, None]) + t_mean, eval_targets) for a in alphas])
