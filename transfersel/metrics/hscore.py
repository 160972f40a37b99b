"""H-score (Bao et al., ICIP'19) and regularised H-score (Ibrahim et al., NeurIPS'21), spec §2.7.

Both are ``tr(A⁺·cov_g)`` where ``cov_g = cov(g)`` (ddof 1) is the covariance of the features with each
row replaced by its class mean. That covariance has rank ≤ C−1: ``cov_g = Σ_c n_c/(N−1)·d_c d_cᵀ`` with
``d_c = μ_c − μ``, so the trace is C quadratic forms ``Σ_c n_c/(N−1)·d_cᵀ A⁺ d_c``. H-score takes
``A = cov(X)`` (ddof 1, eigh pseudo-inverse with rcond 1e-15); the regularised form takes a Ledoit–Wolf
covariance and scales by (1 − α). Shapes: X (N, D), class means (C, D); algebra in float64.
"""

from __future__ import annotations

import warnings

import numpy as np

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import chol_solve, eigh, row_blocks

PINV_RCOND = 1e-15


def _class_term(inputs: Inputs, solve) -> float:
    """``Σ_c n_c/(N−1)·d_cᵀ A⁺ d_c`` given ``solve(Dᵀ) = A⁺Dᵀ`` for the (D, C) centred class means."""
    d = (inputs.class_means - inputs.mean).T
    return float(((d * solve(d)).sum(axis=0) * inputs.counts).sum() / (inputs.N - 1))


@register_metric(
    "hscore",
    reducible=True,
    description="H-score tr(cov(X)⁺·cov(E[X|y])): class separation in feature space; ≤ C−1",
    reference="thuml/Transfer-Learning-Library tllib/ranking/hscore.py::h_score",
)
def hscore(inputs: Inputs) -> float:
    w, V = eigh(inputs.centered_gram / (inputs.N - 1))
    keep = np.abs(w) > PINV_RCOND * np.abs(w).max()  # numpy.linalg.pinv's relative cut-off
    rank = int(keep.sum())
    if rank < inputs.D:
        warnings.warn(
            f"hscore: covariance rank {rank} < D = {inputs.D}"
            + (" (N ≤ D: the score saturates at C−1)" if inputs.N <= inputs.D else "")
            + "; consider hscore_reg",
            TransferabilityWarning,
            stacklevel=3,
        )
    Vk, inv = V[:, keep], 1.0 / w[keep]
    return _class_term(inputs, lambda d: Vk @ (inv[:, None] * (Vk.T @ d)))


def ledoit_wolf(inputs: Inputs) -> tuple[np.ndarray, float]:
    """Ledoit–Wolf covariance ``(1 − α)·S + α·m·I`` of X (ddof 0) and its α (scikit-learn's shrinkage).

    ``β' = (Σ_n ‖x_n‖⁴/N − ‖S‖²_F)/(N·D)``, ``δ = (‖S‖²_F − D·m²)/D``, ``α = min(β', δ)/δ``; the fourth
    moment ``Σ_n ‖x_n‖⁴`` of the centred rows replaces scikit-learn's ``(X∘X)ᵀ(X∘X)`` Gram.
    """
    N, D = inputs.N, inputs.D
    S = inputs.centered_gram / N
    m = float(np.trace(S)) / D
    fourth = 0.0
    for _, block in row_blocks(inputs.X):
        block -= inputs.mean
        fourth += float((np.einsum("nd,nd->n", block, block) ** 2).sum())
    frob2 = float(np.vdot(S, S))
    beta = (fourth / N - frob2) / (N * D)
    delta = (frob2 - D * m * m) / D
    shrink = min(beta, delta)
    alpha = 0.0 if shrink == 0 else shrink / delta
    S *= 1.0 - alpha  # S is our own array: shrink it in place into Σ_LW
    S.flat[:: D + 1] += alpha * m
    return S, alpha


@register_metric(
    "hscore_reg",
    reducible=True,
    description="H-score with a Ledoit–Wolf shrunk feature covariance, scaled by (1 − α); ≥ 0",
    reference="thuml/Transfer-Learning-Library tllib/ranking/hscore.py::regularized_h_score",
)
def hscore_reg(inputs: Inputs) -> float:
    sigma, alpha = ledoit_wolf(inputs)
    # Σ_LW is positive definite whenever α > 0; chol_solve falls back to a pseudo-inverse (and warns)
    term = _class_term(inputs, lambda d: chol_solve(sigma, d, what="hscore_reg: Ledoit–Wolf covariance"))
    return (1.0 - alpha) * term
