"""TransRate (Huang et al., ICML'22) as in tllib, spec §2.8.

Coding rate ``R(A) = ½ log det(I + AᵀA/(n·eps))`` of the n rows of A. With ``Z = X − μ`` (global
centring only, class subsets are not re-centred) the score is ``R(Z) − (1/C) Σ_c R(Z_c)``, an
unweighted class average. Sylvester's identity ``det(I_D + a AᵀA) = det(I_n + a AAᵀ)`` lets each class
term use the smaller of its n_c×n_c and D×D Gram. Global centring makes the global Gram the sum of the
class Grams, ``ZᵀZ = Σ_c Z_cᵀZ_c``: when every class takes the D×D side (n_c ≥ D, e.g. large N), one pass
over the rows, class by class (each class streamed in row blocks), gives every term with O(D²) memory and
the cost of one Gram; otherwise the global term is the shared centred Gram.
Log-determinants by Cholesky. Shapes: X (N, D); all Grams float64.
"""

from __future__ import annotations

import warnings

import numpy as np

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import chol_logdet, gram
from transfersel.metrics._stream import RowView, class_rows


def coding_rate(G: np.ndarray, n: int, eps: float) -> float:
    """``½ log det(I + G/(n·eps))`` for a Gram ``G`` (either side of Sylvester's identity) of n rows."""
    A = G / (n * eps)
    A.flat[:: len(A) + 1] += 1.0
    return 0.5 * chol_logdet(A)


@register_metric(
    "transrate",
    reducible=True,
    description="TransRate: coding rate of the features minus its class-conditional average (tllib form)",
    reference="thuml/Transfer-Learning-Library tllib/ranking/transrate.py::transrate",
)
def transrate(inputs: Inputs, *, eps: float = 1e-4) -> float:
    N, D, C = inputs.N, inputs.D, inputs.C
    if inputs.scale_unsafe("transrate", why=f"eps = {eps:g} in its coding rates"):
        return float("nan")
    if (inputs.counts < D).sum() * 2 > C:
        warnings.warn(
            f"transrate: most classes have fewer samples than D = {D}; the class terms mostly count "
            "samples (wide regime)",
            TransferabilityWarning,
            stacklevel=3,
        )
    # every class streams its own D×D Gram: their sum is the global one (no extra pass); otherwise the
    # shared centred Gram (often already computed for the other metrics) is the global term
    summed = bool((inputs.counts >= D).all())
    total_gram = np.zeros((D, D)) if summed else inputs.centered_gram
    class_rates = 0.0
    for _, rows in class_rows(inputs.y, inputs.counts):
        n_c = len(rows)
        if n_c < D:  # n_c×n_c side; the class rows (fewer than D) fit beside the D×D Gram
            Z = np.asarray(inputs.X[rows], dtype=np.float64) - inputs.mean
            class_rates += coding_rate(Z @ Z.T, n_c, eps)
        else:  # streamed in row blocks of the class
            G_c = gram(RowView(inputs.X, index=rows), shift=inputs.mean, device=inputs.device)
            class_rates += coding_rate(G_c, n_c, eps)
            if summed:
                total_gram += G_c
    return float(coding_rate(total_gram, N, eps) - class_rates / C)
