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

Out of core, Z, L and P are never built: the PCA axes come from the shared centred Gram, one class-ordered
pass over X gives Z's per-class scatters ``S_c = Σ_{y=c} (z − m_c)(z − m_c)ᵀ`` (C, k, k) and its centred
Gram ``G_Z``, with class means ``m_c = (μ_c − μ) V`` (linear). Both LDA solvers need only these: the
``svd`` solver's SVD of the scaled within-class deviations is the eigendecomposition of their k×k Gram
``Σ_c S_c`` (singular values = √eigenvalues, right singular vectors = eigenvectors). ``‖L‖_*`` is the sum
of the square roots of the eigenvalues of ``Lᵀ_c L_c = scalingsᵀ G_Z scalings``, and a second class-ordered
pass gives each ``‖P_c‖_*`` from a (C, C) QR triangle of P_c updated block by block. ``‖L‖_*`` takes
square roots of eigenvalues, which lose the relative accuracy of singular values far below the largest
(≈ √ε·σ_max absolutely); that nuclear norm, dominated by the large ones, stays within 1e-7 relative of the
SVD.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import eigh, softmax_rows
from transfersel.metrics._reduce import principal_axes
from transfersel.metrics._stream import projected_class_blocks

PCA_DIMS = 64
SHRINKAGE_DIMS = 32
SHRINKAGE_FLOOR = 1e-10
SVD_TOL = 1e-4  # scikit-learn's LinearDiscriminantAnalysis(tol=1e-4)


def shrunk(cov: np.ndarray, t: float) -> np.ndarray:
    """(k, k) covariance shrunk towards its mean variance: ``(1 − t)·S + t·tr(S)/k·I`` (a new array)."""
    out = (1.0 - t) * cov
    out.flat[:: len(cov) + 1] += t * float(np.trace(cov)) / len(cov)
    return out


def projected_scatter(inputs: Inputs, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(m, S, G_Z)`` of ``Z = (X − μ) V``: class means (C, k), per-class scatters (C, k, k) and centred Gram
    (k, k), from one class-ordered pass over X."""
    k = V.shape[1]
    m = (inputs.class_means - inputs.mean) @ V
    S, G, total = np.zeros((inputs.C, k, k)), np.zeros((k, k)), np.zeros(k)
    for c, Z in projected_class_blocks(inputs.X, inputs.y, inputs.counts, V, mean=inputs.mean):
        G += Z.T @ Z
        total += Z.sum(axis=0)
        Z -= m[c]
        S[c] += Z.T @ Z
    G -= np.outer(total, total) / inputs.N  # Z's mean is 0 up to roundoff: no cancellation
    return m, S, G


def lda_eigen(
    m: np.ndarray, S: np.ndarray, G: np.ndarray, counts: np.ndarray, t: float
) -> tuple[np.ndarray, ...]:
    """scikit-learn's ``eigen`` solver: ``(scalings (k, k), coef (C, k), intercept (C,), shift (k,))``."""
    N = counts.sum()
    priors = counts / N
    Sw = sum(p * shrunk(S_c / n_c, t) for p, S_c, n_c in zip(priors, S, counts, strict=True))
    Sb = shrunk(G / N, t) - Sw
    evals, evecs = scipy.linalg.eigh(Sb, Sw)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = m @ evecs @ evecs.T
    intercept = -0.5 * np.einsum("cd,cd->c", m, coef) + np.log(priors)
    return evecs, coef, intercept, np.zeros(m.shape[1])  # the eigen solver's transform does not centre


def lda_svd(m: np.ndarray, S: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """scikit-learn's ``svd`` solver: ``(scalings (k, r), coef (C, k), intercept (C,), xbar (k,))``.

    Its SVD of ``√(1/N)·(Z − m_y)/std`` is taken as the eigendecomposition of that matrix's Gram
    ``Σ_c S_c/(N·std stdᵀ)``: singular values ``√λ``, right singular vectors the eigenvectors.
    """
    N, C = counts.sum(), len(counts)
    priors = counts / N
    W = S.sum(axis=0)
    std = np.sqrt(np.diag(W) / N)
    std[std == 0] = 1.0
    w, U = eigh(W / N / np.outer(std, std))
    sv, Vt = np.sqrt(np.clip(w[::-1], 0.0, None)), U[:, ::-1].T
    rank = int((sv > SVD_TOL).sum())
    scalings = (Vt[:rank] / std).T / sv[:rank]
    xbar = priors @ m
    centres = (np.sqrt(N * priors / max(C - 1, 1)) * (m - xbar).T).T @ scalings
    _, S2, Vt2 = np.linalg.svd(centres, full_matrices=False)
    rank2 = int((S2 > SVD_TOL * S2[0]).sum())
    scalings = scalings @ Vt2.T[:, :rank2]
    coef = (m - xbar) @ scalings
    intercept = -0.5 * (coef**2).sum(axis=1) + np.log(priors)
    coef = coef @ scalings.T
    intercept -= xbar @ coef.T
    return scalings, coef, intercept, xbar


def nuclear_from_gram(G: np.ndarray) -> float:
    """``‖A‖_*`` from ``AᵀA``: the sum of the square roots of its eigenvalues (negative roundoff as 0)."""
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(G), 0.0, None)).sum())


def posterior_terms(
    inputs: Inputs, V: np.ndarray, coef: np.ndarray, intercept: np.ndarray
) -> tuple[float, float]:
    """``(mean_i P[i, y_i], Σ_c ‖P_c‖_*)`` of ``P = softmax(Z coefᵀ + intercept)``, in one pass.

    Each ``‖P_c‖_*`` comes from the (≤ C, C) triangle R of a QR of P_c updated block by block (TSQR:
    ``R ← qr([R; P_block])``): P_c and R have the same singular values, and unlike the eigenvalues of
    ``P_cᵀP_c`` they keep their accuracy far below the largest, so the sum does not depend on the blocking.
    """
    true_class, nuclear = 0.0, 0.0
    current, R = -1, None
    for c, Z in projected_class_blocks(inputs.X, inputs.y, inputs.counts, V, mean=inputs.mean):
        if c != current:
            nuclear += 0.0 if R is None else float(np.linalg.svd(R, compute_uv=False).sum())
            current, R = c, np.zeros((0, inputs.C))
        P = softmax_rows(Z @ coef.T + intercept, inplace=True)
        true_class += P[:, c].sum()
        R = np.linalg.qr(np.vstack([R, P]), mode="r")
    nuclear += 0.0 if R is None else float(np.linalg.svd(R, compute_uv=False).sum())
    return true_class / inputs.N, nuclear


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
    G_X = inputs.centered_gram if inputs.N >= inputs.D else None
    V = principal_axes(inputs.X, k, mean=inputs.mean, centered_gram=G_X)  # LDA is invariant to the signs
    m, S, G = projected_scatter(inputs, V)
    ev = np.diag(G)[:SHRINKAGE_DIMS] / (inputs.N - 1)  # PCA variances, ddof 1 (scikit-learn's)
    t = max(float(np.exp(-ev.sum())), SHRINKAGE_FLOOR)
    if t == SHRINKAGE_FLOOR:
        scalings, coef, intercept, _ = lda_svd(m, S, inputs.counts)
    else:
        scalings, coef, intercept, _ = lda_eigen(m, S, G, inputs.counts, t)
    L_axes = scalings[:, : min(inputs.C - 1, V.shape[1])]
    sfda, compact = posterior_terms(inputs, V, coef, intercept)
    return {
        "nuc": nuclear_from_gram(L_axes.T @ G @ L_axes),  # L = (Z − shift) L_axes, centred: Gram from G_Z
        "sfda": sfda,
        "compact": float(np.log(compact)),
    }
