"""PARC: pairwise annotation representation comparison (Bolya et al., NeurIPS'21), spec §2.10.

Spearman correlation between the feature RDM ``1 − corr(rows of F)`` of 32-d randomized-PCA
scores and the label RDM. The label RDM is binary (0 for same-class pairs), so Spearman reduces
to a Mann–Whitney count of different-class values above same-class values: only the ``n_s ≈ N²/2C``
same-class values are stored; the different-class values stream through in row blocks.

Above ``MAX_SAMPLES`` rows the registry scores a seeded class-stratified subsample (``max_rows``, spec
scale.md §2); the ``max_samples`` option can lower that cap, not raise it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import matmul_rows, row_blocks

PCA_DIMS = 32  # the reference's ratio = 2 > 1 means 32 components
OVERSAMPLES = 10
PCA_SEED = 1919
BLOCK_VALUES = 1 << 21  # RDM entries per row block (16 MB of float64)
TIE_VALUES = 1 << 23  # RDM values sorted at once when counting ties (64 MB)
MAX_SAMPLES = 10_000  # below the registry's SUBSAMPLE_CAP: the RDM has N²/2 entries


def randomized_pca_scores(X: np.ndarray, k: int) -> np.ndarray:
    """(N, k) float64 scores of scikit-learn's randomized PCA, replicated in float64.

    ``PCA(k, svd_solver="randomized", iterated_power=1, n_oversamples=10,
    power_iteration_normalizer="none", random_state=1919)``: legacy Gaussian test matrix, one
    unnormalised power iteration, economic QR, SVD of the projection, signs from ``Vᵀ``
    (``svd_flip(u_based_decision=False)``). ``X`` is centred on the fly, never copied whole.
    """
    N, D = X.shape
    mu = X.mean(axis=0, dtype=np.float64)

    def xc(W: np.ndarray) -> np.ndarray:  # (X − μ) W
        return matmul_rows(X, W, shift=mu)

    def xct(W: np.ndarray) -> np.ndarray:  # (X − μ)ᵀ W
        out = np.zeros((D, W.shape[1]))
        for rows, B in row_blocks(X):
            B -= mu
            out += B.T @ W[rows]
        return out

    # scikit-learn factorises A = Xc, or A = Xcᵀ when N < D; (a, at) apply A and Aᵀ
    a, at = (xc, xct) if N >= D else (xct, xc)
    cols = D if N >= D else N
    omega = np.random.RandomState(PCA_SEED).normal(size=(cols, k + OVERSAMPLES))
    Q, _ = np.linalg.qr(a(at(a(omega))))
    U_hat, s, Vt = np.linalg.svd(at(Q).T, full_matrices=False)  # B = QᵀA
    if N >= D:
        U, Vt = Q @ U_hat[:, :k], Vt[:k]
    else:
        U, Vt = Vt[:k].T, (Q @ U_hat[:, :k]).T
    signs = np.sign(Vt[np.arange(k), np.abs(Vt).argmax(axis=1)])
    return U * (signs * s[:k])


def _rdm_blocks(F: np.ndarray, y: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the upper triangle of ``R_f = 1 − corr(rows of F)`` as ``(values, same_class)`` per
    row block (1-D arrays over the pairs i < j of the block's rows)."""
    N = F.shape[0]
    Fr = F - F.mean(axis=1, keepdims=True)
    Fr /= np.linalg.norm(Fr, axis=1, keepdims=True)
    step = max(1, BLOCK_VALUES // N)
    for i0 in range(0, N - 1, step):
        i1 = min(i0 + step, N)
        corr = np.clip(Fr[i0:i1] @ Fr[i0:].T, -1.0, 1.0)  # only columns j ≥ i0 can be above the diagonal
        upper = np.arange(i0, N)[None, :] > np.arange(i0, i1)[:, None]
        same = y[i0:i1, None] == y[None, i0:]
        yield 1.0 - corr[upper], same[upper]


def _tie_term(F: np.ndarray, y: np.ndarray, M: int) -> float:
    """``Σ_g (t_g³ − t_g)`` over the groups of equal values of the upper triangle of ``R_f``.

    Equal values share a bit pattern, so hashing the bits splits the values into ``P`` disjoint
    parts, each small enough to sort; every part is one more streaming pass over the RDM.
    """
    P = max(1, math.ceil(M / TIE_VALUES))
    total = 0.0
    for part in range(P):
        kept = []
        for values, _ in _rdm_blocks(F, y):
            if P > 1:
                h = (values.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
                values = values[h % np.uint64(P) == part]
            kept.append(values)
        _, t = np.unique(np.concatenate(kept), return_counts=True)
        t = t[t > 1].astype(np.float64)
        total += float((t**3 - t).sum())
    return total


def spearman_with_label_rdm(F: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation (average ranks) between the upper triangles of ``1 − corr(rows of F)``
    and the binary label RDM, in the Mann–Whitney form of spec §2.10."""
    same = np.sort(np.concatenate([v[s] for v, s in _rdm_blocks(F, y)]))
    M = F.shape[0] * (F.shape[0] - 1) // 2
    n_s = len(same)
    n_d = M - n_s
    if n_s == 0 or n_d == 0:
        return float("nan")
    U = 0.0  # Σ over (different, same) pairs of [r_d > r_s] + ½[r_d = r_s]
    for values, s in _rdm_blocks(F, y):
        diff = values[~s]
        lo = np.searchsorted(same, diff, side="left")
        hi = np.searchsorted(same, diff, side="right")
        U += float(lo.sum()) + 0.5 * float((hi - lo).sum())
    rank_var = (M * M - 1) / 12 - _tie_term(F, y, M) / (12 * M)
    if rank_var <= 0:  # every feature-RDM value tied: the rank correlation is undefined
        return float("nan")
    return (U - n_d * n_s / 2) / math.sqrt(n_d * n_s * rank_var)


@register_metric(
    "parc",
    max_rows=MAX_SAMPLES,  # the N×N RDM cannot stream: a seeded stratified subsample above it
    description="100 × Spearman between feature and label RDMs of 32-d randomized-PCA scores; in [-100, 100]",
    reference="TencentARC/SFDA metrics.py::PARC_Score (dbolya/parc), with the exact binary label RDM",
)
def parc(inputs: Inputs, *, max_samples: int = MAX_SAMPLES) -> float:
    if max_samples < 2:
        raise InputError(f"parc max_samples must be at least 2, got {max_samples}")
    if inputs.N > max_samples:
        warnings.warn(
            f"parc: N = {inputs.N} > max_samples = {max_samples}; scoring a seeded class-stratified "
            "subsample (the N×N RDM would not fit)",
            TransferabilityWarning,
            stacklevel=3,
        )
        inputs = inputs.subsampled(max_samples)
    X, y = inputs.normalised().X, inputs.y  # standardised PCA scores and correlations: scale-free
    F = randomized_pca_scores(X, min(PCA_DIMS, *X.shape))
    # standardise the columns (ddof 0); a constant column stays unscaled, as in StandardScaler
    F -= F.mean(axis=0)
    sd = F.std(axis=0)
    F /= np.where(sd > 10 * np.finfo(np.float64).eps, sd, 1.0)
    flat = int((np.ptp(F, axis=1) == 0).sum())  # rows whose correlation with any other is undefined
    if F.shape[1] < 2 or flat:
        cause = (
            f"the features have {F.shape[1]} dimension(s), a row correlation needs 2 or more"
            if F.shape[1] < 2
            else f"{flat} sample(s) have constant PCA scores (constant features?), their correlations are 0/0"
        )
        return _undefined(cause)
    rho = spearman_with_label_rdm(F, y)
    if not np.isfinite(rho):
        single = (inputs.counts == 1).all()
        return _undefined("every class has a single sample" if single else "every feature-RDM value is tied")
    return 100.0 * rho


def _undefined(cause: str) -> float:
    warnings.warn(
        f"parc: {cause}; the score is undefined, returning nan", TransferabilityWarning, stacklevel=4
    )
    return float("nan")
