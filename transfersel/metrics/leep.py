"""LEEP: log expected empirical prediction (Nguyen et al., ICML'20), spec §2.5."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import class_sums, row_blocks, softmax_rows


def expected_empirical_prediction(
    posteriors: np.ndarray,
    y: np.ndarray,
    C: int,
    *,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """(N,) EEP_i = Σ_z θ_iz p(y_i|z) for soft source assignments θ (N, Z).

    θ is ``posteriors``, or ``transform(rows)`` computed block by block (LEEP passes raw logits and a
    softmax), so memory stays at one row block. Two passes: the empirical joint ``J = Oᵀθ / N`` (C×Z),
    then ``θ p(y|z)ᵀ`` at the true class. A source column with zero mass has θ_iz = 0 for every i, so
    giving it p(y|z) = 0 equals dropping it (google's ``divide_no_nan``).
    """
    J = class_sums(posteriors, y, C, transform=transform) / len(y)
    mass = J.sum(axis=0)
    cond = np.divide(J, mass, out=np.zeros_like(J), where=mass > 0)  # p(y | z)
    eep = np.empty(len(y))
    for rows, block in row_blocks(posteriors):
        theta = block if transform is None else transform(block)
        # only the true class: a row-wise dot with p(y_i | ·), not the (rows, C) product θ p(·|z)ᵀ
        eep[rows] = np.einsum("iz,iz->i", theta, cond[y[rows]])
    return eep


def mean_eep(eep: np.ndarray, C: int, *, log: bool, metric: str) -> float:
    """Mean EEP, or mean log EEP with ``EEP ≤ 0`` (underflow) counted as ``−log C``."""
    if not log:
        return float(eep.mean())
    bad = eep <= 0
    if bad.any():
        warnings.warn(
            f"{metric}: {int(bad.sum())} sample(s) have EEP ≤ 0 (underflow); counted as −log C",
            TransferabilityWarning,
            stacklevel=3,
        )
    logs = np.log(np.where(bad, 1.0, eep))
    logs[bad] = -np.log(C)
    return float(logs.mean())


def _softmax_block(block: np.ndarray) -> np.ndarray:
    """Softmax of a float64 row block that :func:`row_blocks` copied for us: computed in place."""
    return softmax_rows(block, inplace=True)


@register_metric(
    "leep",
    description="Log expected empirical prediction of the source head; ≤ 0 (log=False: SFDA-table mean EEP)",
    needs=("logits",),
    reference="thuml/LogME LEEP.py::LEEP (log); TencentARC/SFDA metrics.py::LEEP (log=False)",
)
def leep(inputs: Inputs, *, log: bool = True) -> float:
    eep = expected_empirical_prediction(inputs.logits, inputs.y, inputs.C, transform=_softmax_block)
    return mean_eep(eep, inputs.C, log=log, metric="leep")
