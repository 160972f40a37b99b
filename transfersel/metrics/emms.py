"""EMMS: efficient multi-task model selector (Meng et al., ICCV'23), spec §2.2.

The features are regressed onto a λ-weighted mixture of K standardised label embeddings
``T = Σ_k λ_k Ŷ_k`` (N×D2, ``Ŷ_k[i] = Ê_k[y_i]``), λ on the simplex; the score is minus the residual.
Every target is constant within a class (``Ŷ_k = O Ê_k``), so the least-squares projection only enters
through the C×C matrix ``H = Oᵀ Π_x O = S_xᵀ G_x⁺ S_x`` and, with it, two K×K matrices:

    Q_kl = ⟨Π_x Ŷ_k, Ŷ_l⟩ = tr(Ê_kᵀ H Ê_l),      A_kl = ⟨Ŷ_k, Ŷ_l⟩ = Σ_c n_c ⟨Ê_k[c], Ê_l[c]⟩.

For a regression target ``T_μ = Σ μ_k Ŷ_k`` (``P = Π_x T_μ``, the minimum-norm least-squares fit) and
mixture weights λ the residual is ``‖P − T_λ‖² = μᵀQμ − 2 λᵀQμ + λᵀAλ``: the cost is one Gram of the
standardised features, one eigh and C×C·D2 algebra, independent of N·D2.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Literal

import numpy as np

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import _linalg as la
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs, to_numpy
from transfersel.metrics._linalg import EPS64, eigh, eigh_pinv

STD_EPS = 1e-8  # added to the standard deviations (ddof 0) before dividing, as in the reference


def sparsemax(z: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``z`` (K,) onto the probability simplex (Martins & Astudillo, 2016).

    With ``z`` sorted descending, ``k* = max{k : 1 + k·z_(k) > Σ_{j≤k} z_(j)}``,
    ``τ = (Σ_{j≤k*} z_(j) − 1)/k*`` and the result is ``max(z − τ, 0)``.
    """
    z = np.asarray(z, dtype=np.float64)
    z_sorted = np.sort(z)[::-1]
    cumsum = np.cumsum(z_sorted)
    k = np.arange(1, len(z) + 1)
    k_star = k[1 + k * z_sorted > cumsum][-1]
    tau = (cumsum[k_star - 1] - 1) / k_star
    return np.maximum(z - tau, 0.0)


def standardised_class_embeddings(E: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(K, C, D2) ``Ê``: each (encoder, channel) of ``Ŷ`` standardised over the N samples (ddof 0).

    ``Ŷ`` repeats ``E[k, c]`` n_c times, so its sample mean and variance are class-weighted.
    """
    q = counts / counts.sum()
    mean = np.einsum("c,kcd->kd", q, E)[:, None, :]
    std = np.sqrt(np.einsum("c,kcd->kd", q, (E - mean) ** 2))[:, None, :]
    return (E - mean) / (std + STD_EPS)


def projection_basis(centered_gram: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W, scale)``: ``W`` (D, r) with ``W Wᵀ = G_x⁺`` for ``x = (X − μ)/scale``, ``scale = std + 1e-8``.

    ``G_x`` is the centred Gram scaled by the column standard deviations. The pseudo-inverse drops
    eigenvalues ``≤ max(N, D)·ε64·λ_max`` (a cut-off on eigenvalues: the Gram squares the condition
    number); r = rank(x).
    """
    D = len(centered_gram)
    scale = np.sqrt(np.diag(centered_gram) / N) + STD_EPS
    w, V = eigh(centered_gram / np.outer(scale, scale))
    keep = w > max(N, D) * EPS64 * w[-1]
    return V[:, keep] / np.sqrt(w[keep]), scale


def class_projection(inputs: Inputs) -> tuple[np.ndarray, int]:
    """``H = Oᵀ Π_x O`` (C, C) for the standardised features ``x = (X − μ)/(std + 1e-8)``, and rank(x).

    ``G_x = xᵀx`` and ``S_x = xᵀO`` are the cached centred Gram and centred class sums scaled by
    the column standard deviations: no pass over X beyond the shared ones.
    """
    W, scale = projection_basis(inputs.centered_gram, inputs.N)
    S_x = (inputs.class_sums - inputs.counts[:, None] * inputs.mean).T / scale[:, None]  # (D, C)
    B = W.T @ S_x  # G_x^{+1/2} S_x restricted to col(x)
    return B.T @ B, W.shape[1]


def simplex_least_squares(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact ``argmin_{λ ∈ simplex} λᵀAλ − 2bᵀλ`` for PSD ``A`` (K, K): the best mixture for a fixed w.

    Enumerates the supports (K is the number of label encoders, 3 in the paper): on each, the
    equality-constrained minimiser solves the KKT system by minimum-norm least squares; the
    non-negative candidate with the least objective is the global minimiser of this convex problem.
    """
    K = len(b)
    best, best_value = np.full(K, 1.0 / K), np.inf
    for size in range(1, K + 1):
        for support in itertools.combinations(range(K), size):
            S = list(support)
            kkt = np.block([[A[np.ix_(S, S)], np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            sol = np.linalg.lstsq(kkt, np.append(b[S], 1.0), rcond=None)[0][:size]
            if (sol < 0).any():
                continue
            lam = np.zeros(K)
            lam[S] = sol
            value = lam @ A @ lam - 2 * b @ lam
            if value < best_value:
                best, best_value = lam, value
    return best


def alternate(
    Q: np.ndarray, A: np.ndarray, *, rcond: float, steps: int, tol: float
) -> tuple[np.ndarray, float]:
    """Alternate the w-fit and the λ-fit; return the final λ and residual ``‖x w − T_λ‖²``.

    Step 1 is the reference: w fitted to the uniform mixture ``T_μ``, ``λ = sparsemax(A⁺ Q μ)``.
    Sparsemax is the Euclidean, not the A-metric, projection onto the simplex, so repeating it can
    raise the residual (it does on the public vectors). Each further step therefore refits w to the
    current ``T_λ`` (a projection) and then λ exactly on the simplex (:func:`simplex_least_squares`):
    both are exact block minimisations, so the residual never increases, and the alternation stops
    after ``steps`` steps or when the relative change falls below ``tol``.
    """
    K = len(A)
    mu = np.full(K, 1.0 / K)
    lam = sparsemax(eigh_pinv(A, rcond) @ Q @ mu)
    res = float(mu @ Q @ mu - 2 * lam @ Q @ mu + lam @ A @ lam)
    for _ in range(steps - 1):
        mu = lam
        lam = simplex_least_squares(A, Q @ mu)
        res, previous = float(mu @ Q @ mu - 2 * lam @ Q @ mu + lam @ A @ lam), res
        if abs(previous - res) <= tol * abs(previous):
            break
    return lam, res


@register_metric(
    "emms",
    reducible=True,
    description="Minus the residual of regressing λ-mixed label embeddings on the features; ≤ 0",
    needs=("label_embeddings",),
    reference="OpenGVLab/Multitask-Model-Selector metrics.py::EMMS",
)
def emms(
    inputs: Inputs,
    *,
    steps: int = 1,
    tol: float = 1e-6,
    residual_scale: Literal["reference", "mean"] = "reference",
) -> float:
    N = inputs.N
    H, rank = class_projection(inputs)
    if _saturated(rank, N):
        return 0.0
    E_hat = standardised_class_embeddings(inputs.label_embeddings, inputs.counts)
    Q = np.einsum("kce,cd,lde->kl", E_hat, H, E_hat, optimize=True)
    A = np.einsum("kce,c,lce->kl", E_hat, inputs.counts.astype(np.float64), E_hat, optimize=True)
    return _score(Q, A, N=N, D2=E_hat.shape[2], steps=steps, tol=tol, residual_scale=residual_scale)


def _saturated(rank: int, N: int) -> bool:
    if rank >= N - 1:  # col(x) holds every centred vector: P = T0, λ = 1/K, T1 = T0
        warnings.warn(
            f"emms: N ≤ D (rank of the standardised features {rank} ≥ N − 1 = {N - 1}), score saturates at 0",
            TransferabilityWarning,
            stacklevel=4,
        )
        return True
    return False


def _score(
    Q: np.ndarray, A: np.ndarray, *, N: int, D2: int, steps: int, tol: float, residual_scale: str
) -> float:
    """Minus the scaled residual of the alternation, from the K×K matrices ``Q`` and ``A``."""
    if steps < 1:
        raise InputError(f"emms steps must be ≥ 1 (1 = the reference), got {steps}")
    if residual_scale not in ("reference", "mean"):
        raise InputError(f"emms residual_scale must be 'reference' or 'mean', got {residual_scale!r}")
    # minimum-norm least squares over the (N·D2)×K stacked targets, numpy's lstsq cut-off
    _, res = alternate(Q, A, rcond=max(N * D2, len(A)) * EPS64, steps=steps, tol=tol)
    res = max(res, 0.0)  # the expanded form can round slightly below 0
    # reference precedence: (sum / N) * D2; "mean" is the per-entry mean sum / (N·D2)
    return -(res / N * D2 if residual_scale == "reference" else res / (N * D2))


def emms_from_targets(
    features: Any,
    targets: Any,
    *,
    steps: int = 1,
    tol: float = 1e-6,
    residual_scale: Literal["reference", "mean"] = "reference",
    device: str | None = "cpu",
) -> float:
    """EMMS on per-sample label embeddings (captions, answers; numbers as one channel); ≤ 0.

    Args:
        features: (N, D) float32/float64 (never modified).
        targets: (K, N, D2) float ``Y[k, i]``: encoder k's embedding of sample i's label; (N, R) for K = 1.
        steps, tol, residual_scale: as for :func:`emms`.

    The class-level form is the special case ``Ŷ_k = O Ê_k``. Here ``S_x Ê_k`` becomes ``B_k = xᵀŶ_k``
    (D×D2, one pass over the row blocks of X), so ``Q_kl = tr(B_kᵀ G_x⁺ B_l)`` and ``A_kl = ⟨Ŷ_k, Ŷ_l⟩``.
    """
    from transfersel.metrics._inputs import _check_float_matrix

    X = _check_float_matrix(features, "features")
    N, D = X.shape
    T = to_numpy(targets, "targets")
    T = np.asarray(T[None] if T.ndim == 2 else T, dtype=np.float64)
    if T.ndim != 3 or T.shape[1] != N or T.size == 0:
        raise InputError(f"targets must be (K, N, D2) or (N, R) with N = {N} rows, got {T.shape}")
    if not np.isfinite(T).all():
        raise InputError("targets contain NaN or inf; drop or impute those samples")
    K, _, D2 = T.shape
    mu = sum(B.sum(axis=0) for _, B in la.row_blocks(X)) / N
    W, scale = projection_basis(la.gram(X, shift=mu, device=device), N)
    if _saturated(W.shape[1], N):
        return 0.0
    t_mean, t_std = T.mean(axis=1, keepdims=True), T.std(axis=1, keepdims=True) + STD_EPS
    XtY, A = np.zeros((D, K, D2)), np.zeros((K, K))
    for rows, B in la.row_blocks(X):
        B -= mu
        Y_hat = (T[:, rows] - t_mean) / t_std  # (K, b, D2)
        XtY += np.tensordot(B, Y_hat, axes=(0, 1))
        A += Y_hat.reshape(K, -1) @ Y_hat.reshape(K, -1).T
    Bk = np.tensordot(W, XtY / scale[:, None, None], axes=(0, 0))  # (r, K, D2) = G_x^{+1/2} xᵀŶ
    Q = np.einsum("rke,rle->kl", Bk, Bk, optimize=True)
    return _score(Q, A, N=N, D2=D2, steps=steps, tol=tol, residual_scale=residual_scale)
