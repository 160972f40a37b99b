"""LEEP: log expected empirical prediction (Nguyen et al., ICML'20), spec §2.5."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import Inputs

# Row blocks of this many float64 bytes (512 rows of 1000 logits) stay in cache through the softmax steps.
BLOCK_BYTES = 4 * 2**20
# θ of at most this many float64 bytes (N × Z) is kept for the second pass (80 MB at N = 10,000, Z = 1000);
# larger (a memmap of millions of rows) is recomputed there from the logits, one block at a time.
KEEP_BYTES = 256 * 2**20


def _rows_theta(source: np.ndarray, rows: np.ndarray | slice, out: np.ndarray, softmax: bool) -> np.ndarray:
    """Fill ``out`` (n, Z) with ``exp(l − max l)`` of the ``rows`` of ``source`` when ``softmax``, else with
    the rows themselves; return the (n,) row weights ``w`` with ``θ = out · w`` (1/Σ exp, or 1)."""
    out[...] = source[rows]  # float64 copy, in the cache
    if not softmax:
        return np.ones(len(out))
    out -= out.max(axis=1)[:, None]
    np.exp(out, out=out)
    return 1.0 / out.sum(axis=1)


def _class_sums(J: np.ndarray, y: np.ndarray, w: np.ndarray, E: np.ndarray) -> None:
    """``J[c] += Σ_{i: y_i = c} w_i E_i``: a sparse (C × n) one-hot product, no gather of E's rows."""
    O = scipy.sparse.csc_matrix((w, y, np.arange(len(y) + 1)), shape=(J.shape[0], len(y)))
    J += O @ E


def expected_empirical_prediction(
    source: np.ndarray, y: np.ndarray, C: int, *, softmax: bool = False
) -> np.ndarray:
    """(N,) EEP_i = Σ_z θ_iz p(y_i|z) for soft source assignments θ (N, Z).

    θ is ``source`` (posteriors), or its row softmax when ``softmax`` (LEEP passes raw logits), computed in
    cache-sized float64 row blocks. Two passes: the empirical joint ``J = Oᵀθ / N`` (C×Z), then
    ``θ_i · p(y_i|·)``. A softmax θ that fits ``KEEP_BYTES`` is kept between them, rows in class order, so
    the second pass is one matrix–vector product per class; a larger one is recomputed block by block.
    A source column with zero mass has θ_iz = 0 for every i, so giving it p(y|z) = 0 equals dropping it
    (google's ``divide_no_nan``).
    """
    N, Z = source.shape
    block = max(1, BLOCK_BYTES // (8 * Z))
    J = np.zeros((C, Z))
    w = np.empty(N)
    keep = softmax and N * Z * 8 <= KEEP_BYTES
    if keep:  # class order: in memory (or a small file), so the gather costs no seeks
        order = np.argsort(y, kind="stable")
        theta = np.empty((N, Z))
    buf = None if keep else np.empty((block, Z))
    for start in range(0, N, block):
        rows = slice(start, min(start + block, N))
        take = order[rows] if keep else rows
        E = theta[rows] if keep else buf[: rows.stop - start]
        w[rows] = _rows_theta(source, take, E, softmax)
        _class_sums(J, y[take], w[rows], E)
    J /= N
    mass = J.sum(axis=0)
    cond = np.divide(J, mass, out=np.zeros_like(J), where=mass > 0)  # p(y | z)
    eep = np.empty(N)
    if keep:
        ends = np.cumsum(np.bincount(y, minlength=C))
        for c, (lo, hi) in enumerate(zip(np.r_[0, ends[:-1]], ends, strict=True)):
            eep[order[lo:hi]] = (theta[lo:hi] @ cond[c]) * w[lo:hi]
        return eep
    gathered = np.empty((block, Z))
    for start in range(0, N, block):
        rows = slice(start, min(start + block, N))
        E = buf[: rows.stop - start]
        scale = _rows_theta(source, rows, E, softmax)
        G = np.take(cond, y[rows], axis=0, out=gathered[: len(E)], mode="clip")  # y is in 0..C-1
        # only the true class: a row-wise dot with p(y_i | ·), not the (rows, C) product θ p(·|z)ᵀ
        eep[rows] = np.einsum("iz,iz->i", E, G) * scale
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


@register_metric(
    "leep",
    description="Log expected empirical prediction of the source head; ≤ 0 (log=False: SFDA-table mean EEP)",
    needs=("logits",),
    reference="thuml/LogME LEEP.py::LEEP (log); TencentARC/SFDA metrics.py::LEEP (log=False)",
)
def leep(inputs: Inputs, *, log: bool = True) -> float:
    eep = expected_empirical_prediction(inputs.logits, inputs.y, inputs.C, softmax=True)
    return mean_eep(eep, inputs.C, log=log, metric="leep")
