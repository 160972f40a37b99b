"""NCE: negative conditional entropy (Tran et al., ICCV'19), spec §2.6."""

from __future__ import annotations

import numpy as np

from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import argmax_rows

TINY = 1e-20  # inside both entropy factors, as in the reference


def conditional_entropy(target: np.ndarray, source: np.ndarray, C: int) -> float:
    """``H(Y|Z)`` of the empirical joint of hard labels ``target`` (0..C-1) and ``source`` (any ints).

    The joint is a bincount over the source values that occur (O(N), no N×C one-hots); source
    values with ``P(z) = 0`` carry no mass and are left out, as in the reference.
    """
    N = len(target)
    z_values, z = np.unique(source, return_inverse=True)
    Z = len(z_values)
    joint = np.bincount(z.reshape(-1) * C + target, minlength=Z * C).reshape(Z, C) / N  # P(z, c)
    p_z = joint.sum(axis=1)
    p_c_given_z = joint / p_z[:, None] + TINY
    return float(-(p_z * (p_c_given_z * np.log(p_c_given_z)).sum(axis=1)).sum())


@register_metric(
    "nce",
    description="Negative conditional entropy of the labels given the source head's argmax; ≤ 0",
    needs=("logits",),
    reference="thuml/LogME NCE.py::NCE = tllib negative_conditional_entropy",
)
def nce(inputs: Inputs) -> float:
    z = argmax_rows(inputs.logits)  # first index on ties; argmax of logits = argmax of softmax
    return -conditional_entropy(inputs.y, z, inputs.C)
