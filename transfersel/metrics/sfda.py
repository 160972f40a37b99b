"""SFDA: self-challenging Fisher discriminant analysis (Shao et al., ECCV'22), spec §2.1.

The reference solves ``eigh(Sb, B)`` for all D generalised eigenvectors V and scores with
``coef = M V Vᵀ``. Since ``Vᵀ B V = I`` with V square, ``V Vᵀ = B⁻¹``: the between-class scatter
cancels and each stage is plain shrinkage LDA in the full D-dimensional space, ``W = M B⁻¹``, one
Cholesky with C right-hand sides. ``Sw`` comes from the centred Gram (``N·Sw = G_c − Σ n_c d_c d_cᵀ``).

Stage 1 fits on X and softly mixes every sample towards the mean of the other classes (ConfMix);
stage 2 refits on the mixed features X̃ with the same shrinkage λ and returns the mean probability of
the true class. Shapes: X (N, D) float32/float64, M (C, D), B (D, D), W (C, D), all algebra float64.

Out of core (``_stream``): both stages need only the counts, class sums and centred Gram of their
features, and stage 2 only the (N,) true-class confidences of stage 1: X̃ is a :class:`RowView`
recomputed from X in each of its three passes (class sums, Gram, scores), never an (N, D) array.
"""

from __future__ import annotations

import warnings

import numpy as np

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs
from transfersel.metrics._linalg import EPS64, chol_solve, row_blocks, softmax_rows
from transfersel.metrics._stream import RowView

SHRINKAGE_RATE = 5.0  # a in λ = exp(−a·σ̂)
SHRINKAGE_FLOOR = 1e-10
POWER_ITERATIONS = 3  # double steps; the reference stops here, σ̂ is not a converged eigenvalue
SCORE_BLOCK_ROWS = 1024  # the N×C passes need no large blocks; small ones keep the float64 temporaries small


def adaptive_shrinkage(Sw: np.ndarray) -> float:
    """λ = max(exp(−a·σ̂), 1e-10), σ̂ a rough top eigenvalue of ``Sw`` from 3 double power steps.

    ``v`` starts at the row sums ``Sw·1``; each step is ``u = Sw v/‖Sw v‖``, ``v = Sw u/‖Sw u‖``,
    and ``σ̂ = vᵀ Sw u``.
    """
    peak = float(np.abs(Sw).max())
    e = np.frexp(peak)[1] if np.isfinite(peak) and peak > 0 else 0
    Sw = np.ldexp(Sw, -e)  # exact: σ̂ of 2^−e·Sw is 2^−e·σ̂, and the norms below stay in range
    v = Sw.sum(axis=1)
    for _ in range(POWER_ITERATIONS):
        u = Sw @ v
        u /= np.linalg.norm(u)
        v = Sw @ u
        v /= np.linalg.norm(v)
    sigma = float(np.ldexp(v @ Sw @ u, e))
    return max(float(np.exp(-SHRINKAGE_RATE * sigma)), SHRINKAGE_FLOOR)


def regularised_scatter(inputs: Inputs, *, shrinkage: float | None = None) -> tuple[np.ndarray, float]:
    """SFDA's shrunk within-class scatter ``B = (1 − λ)·Sw + λ·tr(Sw)/D·I`` and its λ.

    Args:
        inputs: validated features and labels; ``Sw = inputs.within_scatter()/N`` (biased, 1/N).
        shrinkage: λ in [0, 1], or None for the adaptive λ of :func:`adaptive_shrinkage`.
            With ``tr(Sw) = 0`` the power iteration is undefined; its limit σ̂ → 0 gives λ = 1.

    Returns:
        ``(B, λ)``: (D, D) float64 and the float λ used.
    """
    B = inputs.within_scatter()  # a new D×D array: scaled in place into B, no further D×D copies
    B /= inputs.N
    trace = float(np.trace(B))
    if shrinkage is not None:
        lam = float(shrinkage)
    else:
        lam = adaptive_shrinkage(B) if trace > 0 else 1.0
    B *= 1.0 - lam
    B.flat[:: inputs.D + 1] += lam * trace / inputs.D
    return B, lam


def _lda(inputs: Inputs, shrinkage: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Shrinkage-LDA weights ``W = M B⁻¹`` (C, D), intercepts ``b_c = −½ μ_cᵀW_c + log q_c`` (C,) and λ."""
    B, lam = regularised_scatter(inputs, shrinkage=shrinkage)
    M = inputs.class_means
    W = chol_solve(B, M.T, what="sfda: shrunk within-class scatter").T
    b = -0.5 * np.einsum("cd,cd->c", M, W) + np.log(inputs.counts / inputs.N)
    return W, b, lam


def _true_class_scores(inputs: Inputs, W: np.ndarray, b: np.ndarray, *, log: bool) -> float:
    """Mean over samples of ``P_{i,y_i}`` (or of its log) for ``P = softmax(XWᵀ + b)``."""
    total = 0.0
    for rows, block in row_blocks(inputs.X, SCORE_BLOCK_ROWS):
        z = block @ W.T + b
        z -= z.max(axis=1, keepdims=True)
        zy = z[np.arange(len(z)), inputs.y[rows]]
        lse = np.log(np.exp(z).sum(axis=1))
        total += (zy - lse).sum() if log else np.exp(zy - lse).sum()
    return total / inputs.N


def _true_class_confidence(inputs: Inputs, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) ``p_i``: the true-class entry of a second softmax over the stage-1 probabilities.

    The only per-sample state stage 2 needs (the N×C probabilities are reduced to it block by block).
    """
    p = np.empty(inputs.N)
    for rows, block in row_blocks(inputs.X, SCORE_BLOCK_ROWS):
        yb = inputs.y[rows]
        soft = softmax_rows(softmax_rows(block @ W.T + b, inplace=True), inplace=True)
        p[rows] = soft[np.arange(len(yb)), yb]
    return p


def _confmix(inputs: Inputs, W: np.ndarray, b: np.ndarray, dtype: np.dtype) -> RowView:
    """X̃_i = p_i·x_i + (1 − p_i)·μ̄_{−y_i} as a :class:`RowView`: recomputed from X in each pass over it,
    never stored (an (N, D) copy would double the memory of a memmapped X); inputs.X is never written.

    ``p_i`` (:func:`_true_class_confidence`) is confined to ``[1/(e+C−1), e/(e+C−1)]``; ``μ̄_{−c}`` is the
    mean of the other classes' means of the original X. Each mixed row is rounded to ``dtype`` like the
    reference's in-place write, so every pass sees the same X̃.
    """
    M = inputs.class_means
    outer = (M.sum(axis=0) - M) / (inputs.C - 1)
    p = _true_class_confidence(inputs, W, b)
    y = inputs.y

    def mix(rows: slice, block: np.ndarray) -> np.ndarray:
        q = p[rows][:, None]
        block *= q
        block += (1.0 - q) * outer[y[rows]]
        if dtype != np.float64:
            block[...] = block.astype(dtype)
        return block

    return RowView(inputs.X, transform=mix, dtype=dtype)


@register_metric(
    "sfda",
    reducible=True,
    description="Self-challenging Fisher discriminant: mean true-class probability of a 2-stage LDA, (0, 1]",
    reference="TencentARC/SFDA metrics.py::SFDA_Score",
)
def sfda(
    inputs: Inputs,
    *,
    shrinkage: float | None = None,
    log: bool = False,
    store_mixed_in_input_dtype: bool = True,
) -> float:
    """SFDA score; ``log=True`` gives the paper's mean log-probability instead of the mean probability.

    Args:
        shrinkage: fixed λ for both stages, or None for the reference's adaptive λ (from stage 1).
        log: average ``log P2_{i,y_i}`` instead of ``P2_{i,y_i}``.
        store_mixed_in_input_dtype: round X̃ to the input dtype (the reference's behaviour); False
            keeps it float64 (differs by ≤ 1.5e-9 relative).
    """
    if inputs.scale_unsafe("sfda", why="its shrinkage λ = exp(−5·σ̂) of the top scatter eigenvalue σ̂"):
        return float("nan")
    if inputs.N - inputs.C < inputs.D:
        warnings.warn(
            f"sfda: N−C < D ({inputs.N}−{inputs.C} < {inputs.D}), the classes are separable and the score "
            "saturates at 1",
            TransferabilityWarning,
            stacklevel=3,
        )
    d = inputs.class_means - inputs.mean
    total = np.trace(inputs.centered_gram)  # N·tr(St); N·tr(Sw) = N·tr(St) − Σ n_c‖d_c‖² up to roundoff
    if total - inputs.counts @ (d * d).sum(axis=1) <= inputs.N * EPS64 * total:
        separated = bool(np.ptp(inputs.class_means, axis=0).max() > 0)
        outcome = "classes separated, returning 1" if separated else "all classes coincide, returning nan"
        warnings.warn(
            f"sfda: features are constant within every class (tr(Sw) = 0); {outcome}",
            TransferabilityWarning,
            stacklevel=3,
        )
        return (0.0 if log else 1.0) if separated else float("nan")

    W, b, lam = _lda(inputs, shrinkage)
    dtype = inputs.X.dtype if store_mixed_in_input_dtype else np.dtype(np.float64)
    X_mixed = _confmix(inputs, W, b, dtype)
    mixed = inputs.with_features(X_mixed, logits=None, label_embeddings=None)
    W2, b2, _ = _lda(mixed, lam)  # λ from stage 1 is reused, not re-estimated
    return float(_true_class_scores(mixed, W2, b2, log=log))
