"""NCTI: neural-collapse transferability index (Wang et al., ICCV'23), spec selection.md §3. Pool metric.

One model's components, on ``Z`` = the exact 64-component PCA scores of X (centred):

* ``t = max(exp(−Σ_{i<32} ev_i), 1e-10)`` over the PCA variances (ddof 1). ``t = 1e-10`` selects
  scikit-learn's ``svd`` LDA solver, otherwise its ``eigen`` solver with shrinkage t; both are
  reimplemented here in NumPy (same arithmetic, no scikit-learn at run time).
* ``nuc = ‖L‖_*`` for the C−1 discriminant coordinates ``L`` (centred over samples);
* ``sfda = mean_i P[i, y_i]`` for the LDA posteriors P;
* ``compact = log Σ_c ‖P[y = c]‖_*``.

The pool score is ``mm(sfda) + mm(nuc) − mm(compact)`` (:meth:`Metric.combine`).
Shapes: X (N, D) → Z (N, k), k = min(64, N, D); L (N, min(C−1, k)); P (N, C); all float64.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import class_sums, pca_exact, softmax_rows

PCA_DIMS = 64
SHRINKAGE_DIMS = 32
SHRINKAGE_FLOOR = 1e-10
SVD_TOL = 1e-4  # scikit-learn's LinearDiscriminantAnalysis(tol=1e-4)


def shrunk_covariance(Z: np.ndarray, t: float) -> np.ndarray:
    """(k, k) ddof-0 covariance shrunk towards its mean variance: ``(1 − t)·S + t·tr(S)/k·I``."""
    Zc = Z - Z.mean(axis=0)
    S = Zc.T @ Zc / len(Z)
    mu = float(np.trace(S)) / len(S)
    S *= 1.0 - t
    S.flat[:: len(S) + 1] += t * mu
    return S


def lda_eigen(Z: np.ndarray, y: np.ndarray, counts: np.ndarray, t: float) -> tuple[np.ndarray, ...]:
    """scikit-learn's ``eigen`` solver: ``(scalings (k, k), coef (C, k), intercept (C,), shift (k,))``."""
    C = len(counts)
    means = class_sums(Z, y, C) / counts[:, None]
    priors = counts / counts.sum()
    Sw = sum(p * shrunk_covariance(Z[y == c], t) for c, p in enumerate(priors))
    Sb = shrunk_covariance(Z, t) - Sw
    evals, evecs = scipy.linalg.eigh(Sb, Sw)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(priors)
    return evecs, coef, intercept, np.zeros(Z.shape[1])  # the eigen solver's transform does not centre


def lda_svd(Z: np.ndarray, y: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """scikit-learn's ``svd`` solver: ``(scalings (k, r), coef (C, k), intercept (C,), xbar (k,))``."""
    N, C = len(y), len(counts)
    means = class_sums(Z, y, C) / counts[:, None]
    priors = counts / N
    Xc = Z - means[y]
    std = Xc.std(axis=0)
    std[std == 0] = 1.0
    _, S, Vt = np.linalg.svd(np.sqrt(1.0 / N) * (Xc / std), full_matrices=False)
    rank = int((S > SVD_TOL).sum())
    scalings = (Vt[:rank] / std).T / S[:rank]
    xbar = priors @ means
    centres = (np.sqrt(N * priors / max(C - 1, 1)) * (means - xbar).T).T @ scalings
    _, S2, Vt2 = np.linalg.svd(centres, full_matrices=False)
    rank2 = int((S2 > SVD_TOL * S2[0]).sum())
    scalings = scalings @ Vt2.T[:, :rank2]
    coef = (means - xbar) @ scalings
    intercept = -0.5 * (coef**2).sum(axis=1) + np.log(priors)
    coef = coef @ scalings.T
    intercept -= xbar @ coef.T
    return scalings, coef, intercept, xbar


@register_metric(
    "ncti",
    reducible=True,
    pool_weights={"nuc": 1.0, "sfda": 1.0, "compact": -1.0},
    description="Neural-collapse index: mm(LDA true-class prob) + mm(nuclear norm) − mm(class compactness); "
    "pool-relative, 0..2",
    reference="BUserName/NCTI metrics.py::NCTI_Score (PCA svd_solver='full'), evaluate_metric_group1_cpu.py",
)
def ncti(inputs: Inputs) -> dict[str, float]:
    k = min(PCA_DIMS, inputs.N, inputs.D)
    G = inputs.centered_gram if inputs.N >= inputs.D else None
    Z, ev = pca_exact(inputs.X, k, mean=inputs.mean, centered_gram=G)
    ev = ev[:k] * inputs.N / (inputs.N - 1)  # scikit-learn's explained_variance_ is ddof 1
    t = max(float(np.exp(-ev[:SHRINKAGE_DIMS].sum())), SHRINKAGE_FLOOR)
    y, counts = inputs.y, inputs.counts
    if t == SHRINKAGE_FLOOR:
        scalings, coef, intercept, shift = lda_svd(Z, y, counts)
    else:
        scalings, coef, intercept, shift = lda_eigen(Z, y, counts, t)
    L = (Z - shift) @ scalings[:, : min(inputs.C - 1, k)]
    L -= L.mean(axis=0)
    P = softmax_rows(Z @ coef.T + intercept)
    compact = sum(np.linalg.norm(P[y == c], ord="nuc") for c in range(inputs.C))
    return {
        "nuc": float(np.linalg.norm(L, ord="nuc")),
        "sfda": float(P[np.arange(inputs.N), y].mean()),
        "compact": float(np.log(compact)),
    }
