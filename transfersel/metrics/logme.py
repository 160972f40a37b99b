"""LogME: logarithm of maximum evidence (You et al., ICML'21 / JMLR'22), spec §2.3.

Each class is a one-hot regression target ``y_c`` on the raw (not centred) float64 features, fitted by
Bayesian linear regression whose prior (α) and noise (β) precisions maximise the evidence. The
evidence depends on the data only through the spectrum ``σ`` of ``XᵀX``, the squared projections
``z² = (Uᵀy_c)²`` of the target on the left singular vectors and the residual ``r0 = ‖y_c‖² − Σ z²``
outside their span, so all classes come from one Gram, one eigh and the class sums ``S = XᵀO``
(``UᵀO = diag(1/s) VᵀS``): no N×k matrix ``U``.

**N < D (LogME issue #23).** With prior ``w ~ N(0, α⁻¹I_D)`` and noise precision β, the log evidence of a
target y is ``D/2·log α + N/2·log β − β/2‖y − Xm‖² − α/2‖m‖² − ½ log det A − N/2·log 2π`` with
``A = αI_D + βXᵀX``. A is D×D: its eigenvalues are ``α + βσ_i`` for all D eigenvalues σ_i of XᵀX, and
when rank(X) = k < D (always when N < D) the D − k zero ones contribute ``(D − k)·log α``, so
``log det A = Σ_{i≤k} log(α + βσ_i) + (D − k)·log α``. The same follows from the dual form
``y ~ N(0, β⁻¹I_N + α⁻¹XXᵀ)``: ``−½ log det(β⁻¹I_N + α⁻¹XXᵀ) = N/2·log α + N/2·log β − ½Σ_{i≤k}
log(α + βσ_i) − (N − k)/2·log α``, which equals the primal form with the padding (the α-terms both give
``k/2·log α``). The published fixed-point code sums over the k kept σ only, i.e. it adds
``(D − k)/2·log α`` to the evidence: a bias that grows with D − k and with α, which rewards wide features
(on the ``wide_random`` vector, N = 300, D = 512, it turns −0.64 into +2.49). The fixed-point updates of
α and β use ``γ = Σ βσ_i/(α + βσ_i)``, to which zero eigenvalues add nothing, so only the final evidence
changes. Issue #23 is therefore right: ``variant="padded"`` pads σ to length D (fixed-point iteration,
stop at ≤ 1e-3, no ε in the final terms). The function default stays ``"fixed_point"``, the published
value (the shared test vectors and ``check_metrics.py`` compare the default call with it); the two agree
whenever rank(X) = D, i.e. for full-rank features with N > D.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import _linalg as la
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs

MAX_ITERATIONS = 11
# relative change of t = α/β that stops a column's fixed point (JMLR: ≤ 1e-3; ICML: < 1e-2)
STOP_RTOL = {"fixed_point": 1e-3, "padded": 1e-3, "icml": 1e-2}
SINGULAR_VALUE_FLOOR = 1e-10  # singular values at or below count as zero (N > D path)


def log_evidence(
    sigma: np.ndarray,
    z2: np.ndarray,
    r0: np.ndarray,
    N: int,
    D: int,
    *,
    variant: Literal["fixed_point", "padded", "icml"] = "fixed_point",
    epsilon: float = 1e-5,
) -> np.ndarray:
    """Per-target maximum log evidence divided by N, for R regression targets at once.

    Args:
        sigma: (k,) non-negative eigenvalues of ``XᵀX`` kept for the fit (squared singular values).
        z2: (k, R) squared projections ``(Uᵀy)²`` of each target column on the k left singular vectors.
        r0: (R,) squared norm of each target outside ``span(U)``: ``‖y‖² − Σ z²``.
        N, D: number of samples and feature dimension (D enters the prior term ``D/2·log α``).
        variant: "fixed_point" (JMLR'22, stop at ≤ 1e-3), "padded" (the same with the log-determinant over
            all D eigenvalues, the D − k missing ones being zero: the exact evidence, see the module docs)
            or "icml" (ICML'21, stop at < 1e-2, padded log-determinant, ε in the final terms).
        epsilon: added to both evidence denominators (and, for "icml", to the final terms).

    Returns:
        (R,) float64 evidences; columns whose fit is perfect with ``epsilon = 0`` come out non-finite.

    All columns iterate together; ``active`` freezes each column at its own stopping iteration, so
    the result equals running the per-column loop of the reference.
    """
    sig = sigma[:, None]
    R = z2.shape[1]
    alpha, beta = np.ones(R), np.ones(R)
    m2, res2 = np.zeros(R), np.zeros(R)
    active = np.ones(R, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(MAX_ITERATIONS):
            a = np.flatnonzero(active)
            t = alpha[a] / beta[a]
            gamma = (sig / (sig + t)).sum(axis=0)  # effective number of parameters
            m2[a] = (sig * z2[:, a] / (t + sig) ** 2).sum(axis=0)  # ‖m‖², posterior mean squared norm
            res2[a] = (z2[:, a] / (1 + sig / t) ** 2).sum(axis=0) + r0[a]  # ‖y − Xm‖²
            alpha[a] = gamma / (m2[a] + epsilon)
            beta[a] = (N - gamma) / (res2[a] + epsilon)
            change = np.abs(alpha[a] / beta[a] - t) / t
            tol = STOP_RTOL[variant]
            stopped = change < tol if variant == "icml" else change <= tol
            active[a[stopped]] = False
            if not active.any():
                break
        logdet = np.log(alpha[None, :] + beta[None, :] * sig).sum(axis=0)
        if variant != "fixed_point":
            logdet += (D - len(sigma)) * np.log(alpha)  # eigenvalues outside the kept spectrum are 0
        if variant == "icml":
            m2, res2 = m2 + epsilon, res2 + epsilon
        evidence = (
            D / 2 * np.log(alpha)
            + N / 2 * np.log(beta)
            - logdet / 2
            - beta / 2 * res2
            - alpha / 2 * m2
            - N / 2 * np.log(2 * np.pi)
        )
    return evidence / N


def _row_gram(X: np.ndarray) -> np.ndarray:
    """(N, N) float64 ``X Xᵀ`` over float64 row blocks (used when N ≤ D, so N² ≤ N·D)."""
    K = np.empty((X.shape[0], X.shape[0]))
    for rows_i, B_i in la.row_blocks(X):
        for rows_j, B_j in la.row_blocks(X[: rows_i.stop]):
            K[rows_i, rows_j] = B_i @ B_j.T
            K[rows_j, rows_i] = K[rows_i, rows_j].T
    return K


def class_spectrum(inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum ``σ`` (k,) of the raw ``XᵀX`` and the one-hot projections ``z² = (UᵀO)²`` (k, C).

    N > D: eigh of the D×D Gram ``XᵀX = (X − μ)ᵀ(X − μ) + Nμμᵀ`` (the cached centred Gram plus a
    rank-one term: exact, and shared with the other second-order metrics), keeping singular values
    ``√|λ|`` above 1e-10 as the reference does, and ``UᵀO = diag(1/s) VᵀS``. N ≤ D: eigh of the
    N×N ``XXᵀ``, keeping all N values, and ``UᵀO = (OᵀU)ᵀ`` as class sums of the eigenvector rows.
    """
    N, D = inputs.X.shape
    if N > D:
        G = np.multiply.outer(N * inputs.mean, inputs.mean)
        G += inputs.centered_gram
        w, V = la.eigh(G)
        # the reference takes the SVD of XᵀX, whose singular values are |eigenvalues|: on
        # rank-deficient X the roundoff eigenvalues (either sign, ~ε·λ_max) count as kept values
        sigma = np.abs(w)
        keep = np.sqrt(sigma) > SINGULAR_VALUE_FLOOR
        z = (V[:, keep].T @ inputs.class_sums.T) / np.sqrt(sigma[keep])[:, None]
        return sigma[keep], z**2
    w, U = la.eigh(_row_gram(inputs.X))
    z = la.class_sums(U, inputs.y, inputs.C).T
    return np.clip(w, 0.0, None), z**2


@register_metric(
    "logme",
    reducible=True,
    description="Mean per-class log maximum evidence of a Bayesian linear head; higher is better (≈ −1..3)",
    reference="thuml/LogME LogME.py::LogME (fixed point; variant='icml': _fit_icml, tllib with epsilon=0)",
)
def logme(
    inputs: Inputs,
    *,
    variant: Literal["fixed_point", "padded", "icml"] = "fixed_point",
    epsilon: float = 1e-5,
) -> float:
    if variant not in STOP_RTOL:
        raise InputError(f"logme variant must be 'fixed_point', 'padded' or 'icml', got {variant!r}")
    sigma, z2 = class_spectrum(inputs)
    r0 = np.clip(inputs.counts - z2.sum(axis=0), 0.0, None)  # ‖y_c‖² = n_c; roundoff can go below 0
    evidence = log_evidence(sigma, z2, r0, inputs.N, inputs.D, variant=variant, epsilon=epsilon)
    if not np.isfinite(evidence).all():
        warnings.warn(
            f"logme: with epsilon={epsilon} a perfect fit (zero residual or zero weights) makes a "
            "precision infinite; score is nan (use epsilon > 0)",
            TransferabilityWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(evidence.mean())
