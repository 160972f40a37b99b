"""ETran: energy-based transferability (Gholami et al., ICCV'23), spec selection.md §3. Pool metric.

One model's components:

* ``energy``: every feature vector read as logits, ``e_i = logsumexp_j X[i, j]``; the mean of the
  ``⌊5N/1000⌋`` smallest ``e_i`` (at least one). The reference's ``Energy_Score(X, 0.5, "bot")`` takes
  ``int(0.5·10)·N//1000`` samples, i.e. 0.5 % of them, not half (see docs/quirks.md). It is defined on
  the features as they are: ``reduce`` applies to the LDA component only.
* ``lda``: mean true-class posterior ``mean_i P[i, y_i]`` of the reference's shrunk LDA (``class LDA``).
  It computes ``V = eigh(inv(S_w) @ S_b)`` of a non-symmetric matrix, which LAPACK reads as the
  symmetric matrix of its lower triangle; the eigenvectors of a symmetric matrix are orthonormal, so
  its classifier ``coef = M V Vᵀ = M`` is the identity-covariance nearest-mean rule
  ``P = softmax(X Mᵀ − ½‖μ_c‖² + log q_c)``, whatever the shrinkage. ``variant="reference"`` (default,
  the published numbers) computes that rule directly; ``variant="lda"`` scores the LDA the code meant,
  ``coef = M B⁻¹`` with SFDA's adaptively shrunk within-class scatter B.

The pool score is ``0.85·mm(lda) + 0.15·mm(energy)`` (:meth:`Metric.combine`).
Shapes: X (N, D); M (C, D) class means; P (N, C); all float64.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from transfersel.errors import InputError
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import row_blocks
from transfersel.metrics.sfda import _lda, _true_class_scores

ENERGY_PERMILLE = 5  # int(0.5 * 10) of the reference's Energy_Score(X, 0.5, "bot")


def energy(X: np.ndarray) -> float:
    """Mean of the ``max(1, ⌊5N/1000⌋)`` smallest row-wise ``logsumexp`` of X (N, D)."""
    e = np.empty(X.shape[0])
    for rows, B in row_blocks(X):
        top = B.max(axis=1)
        e[rows] = top + np.log(np.exp(B - top[:, None]).sum(axis=1))
    n = max(1, ENERGY_PERMILLE * X.shape[0] // 1000)
    return float(np.partition(e, n - 1)[:n].mean())


@register_metric(
    "etran",
    reducible=True,
    pool_weights={"lda": 0.85, "energy": 0.15},
    description="Energy-based transferability: 0.85·mm(LDA true-class prob) + 0.15·mm(low-tail energy); "
    "pool-relative, 0..1",
    reference="mgholamikn/ETran metrics.py::LDA_Score, Energy_Score(X, 0.5, 'bot'), tw.py",
)
def etran(inputs: Inputs, *, variant: Literal["reference", "lda"] = "reference") -> dict[str, float]:
    if variant == "reference":
        M = inputs.class_means
        W, b = M, -0.5 * np.einsum("cd,cd->c", M, M) + np.log(inputs.counts / inputs.N)
    elif variant == "lda":
        W, b, _ = _lda(inputs, None)
    else:
        raise InputError(f"etran variant must be 'reference' or 'lda', got {variant!r}")
    return {"lda": _true_class_scores(inputs, W, b, log=False), "energy": energy(inputs.unreduced.X)}
