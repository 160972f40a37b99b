"""TransRate (Huang et al., ICML'22) as in tllib, spec §2.8.

Coding rate ``R(A) = ½ log det(I + AᵀA/(n·eps))`` of the n rows of A. With ``Z = X − μ`` (global
centring only, class subsets are not re-centred) the score is ``R(Z) − (1/C) Σ_c R(Z_c)``, an
unweighted class average. Sylvester's identity ``det(I_D + a AᵀA) = det(I_n + a AAᵀ)`` lets each class
term use the smaller of its n_c×n_c and D×D Gram; the global term comes from the shared centred Gram.
Log-determinants by Cholesky. Shapes: X (N, D); all Grams float64.
"""

from __future__ import annotations

import warnings

import numpy as np

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import chol_logdet, gram


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
    if (inputs.counts < D).sum() * 2 > C:
        warnings.warn(
            f"transrate: most classes have fewer samples than D = {D}; the class terms mostly count "
            "samples (wide regime)",
            TransferabilityWarning,
            stacklevel=3,
        )
    total = coding_rate(inputs.centered_gram, N, eps)
    order = np.argsort(inputs.y, kind="stable")
    ends = np.cumsum(inputs.counts)
    class_rates = 0.0
    for n_c, end in zip(inputs.counts, ends, strict=True):
        rows = order[end - n_c : end]  # ascending within the class (stable sort)
        if n_c < D:  # n_c×n_c side
            Z = np.asarray(inputs.X[rows], dtype=np.float64) - inputs.mean
            class_rates += coding_rate(Z @ Z.T, int(n_c), eps)
        else:
            class_rates += coding_rate(
                gram(inputs.X[rows], shift=inputs.mean, device=inputs.device), int(n_c), eps
            )
    return float(total - class_rates / C)
