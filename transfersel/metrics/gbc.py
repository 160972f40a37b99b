"""GBC: Gaussian Bhattacharyya coefficient (Pándy et al., CVPR'22) as in google's code, spec §2.9.

The features are reduced to ``min(64, N, D)`` principal components (exact PCA from the shared centred
Gram: only the top eigenvectors are computed). Each class is a Gaussian with mean ``m_c`` and ddof-0
per-dimension variances floored at 1e-4 (spherical: their mean ``s_c``). The score is
``−Σ_{a≠b} exp(−BD(a, b))`` over ordered pairs, with

    BD(a, b) = ⅛·‖m_a − m_b‖²/s̄ + ½·(log s̄ − ½ log s_a − ½ log s_b),   s̄ = (s_a + s_b)/2.

The reference's log term is not multiplied by the dimension (its sum runs over a scalar); pass
``scale_log_term=True`` for the textbook spherical distance. All C×C pairs at once by broadcasting.
Shapes: X (N, D), axes V (D, d), class statistics (C, d), all float64. Out of core: the axes come from the
shared centred Gram and the class statistics from one pass over X (``_stream.projected_class_scatter``);
the (N, d) scores are never built. GBC is invariant to the order and sign of the axes.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._reduce import principal_axes
from transfersel.metrics._stream import projected_class_scatter


@register_metric(
    "gbc",
    reducible=True,
    description="Gaussian Bhattacharyya coefficient: −(pairwise class overlap) after PCA to 64 dims; ≤ 0",
    reference="google-research stable_transfer/transferability/gbc.py::get_gbc_score (PCA 64, spherical)",
)
def gbc(
    inputs: Inputs,
    *,
    pca_dims: int = 64,
    variance_floor: float = 1e-4,
    gaussian: Literal["spherical", "diagonal"] = "spherical",
    scale_log_term: bool = False,
) -> float:
    if gaussian not in ("spherical", "diagonal"):
        raise InputError(f"gbc: gaussian must be 'spherical' or 'diagonal', got {gaussian!r}")
    if inputs.scale_unsafe("gbc", why=f"its variance floor {variance_floor:g}"):
        return float("nan")
    k = min(pca_dims, inputs.N, inputs.D)
    if k < pca_dims:
        warnings.warn(
            f"gbc: min(N, D) = {k} < pca_dims = {pca_dims} (the reference raises); using {k} components",
            TransferabilityWarning,
            stacklevel=3,
        )
    G = inputs.centered_gram if inputs.N >= inputs.D else None  # N < D: the thin N×N side
    V = principal_axes(inputs.X, k, mean=inputs.mean, centered_gram=G)
    m, var = projected_class_scatter(
        inputs.X, inputs.y, inputs.C, V, mean=inputs.mean, class_means=inputs.class_means
    )
    var = np.maximum(var, variance_floor)  # ddof 0, floored per dimension

    if gaussian == "spherical":
        s = var.mean(axis=1)  # floor first, then the mean: one variance per class
        s_bar = (s[:, None] + s[None, :]) / 2
        sq_norms = (m * m).sum(axis=1)
        dist2 = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (m @ m.T), 0.0)
        log_term = np.log(s_bar) - 0.5 * np.log(s)[:, None] - 0.5 * np.log(s)[None, :]
        bd = dist2 / (8.0 * s_bar) + 0.5 * (V.shape[1] if scale_log_term else 1) * log_term
    else:  # diagonal: per-dimension distances summed, log term included
        v_bar = (var[:, None, :] + var[None, :, :]) / 2  # (C, C, d)
        diff2 = (m[:, None, :] - m[None, :, :]) ** 2
        log_v = np.log(var)
        log_term = np.log(v_bar) - 0.5 * log_v[:, None, :] - 0.5 * log_v[None, :, :]
        bd = (diff2 / (8.0 * v_bar) + 0.5 * log_term).sum(axis=2)
    coefficient = np.exp(-bd)
    np.fill_diagonal(coefficient, 0.0)  # ordered pairs a ≠ b: each unordered pair counts twice
    return float(-coefficient.sum())
