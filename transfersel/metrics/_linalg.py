"""Shared linear algebra for the metrics (spec §1.4).

Everything that touches the N×D feature matrix works in row blocks cast to float64, so a float32
matrix is never copied whole and accumulation is always float64. The D×D and C×C algebra is plain
float64 NumPy/SciPy. ``device`` selects where the Gram (the dominant N·D² cost) runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.linalg

from transfersel.errors import InputError, TransferabilityWarning

EPS64 = np.finfo(np.float64).eps
# A float64 row block of 16 MiB keeps BLAS-3 speed, and stays small next to X: 4096 rows of D = 2048
# were 0.8x a 10,000-row float32 X, and pushed SFDA's peak past 3x X.
BLOCK_BYTES = 16 * 2**20
MIN_BLOCK_ROWS = 256
FINITE_BLOCK_BYTES = 2**20  # all_finite: a block in the cache between its max and its min


def row_blocks(X: np.ndarray, block: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, X[rows] as a writable float64 copy)`` for consecutive row blocks of ``X``
    (``block`` rows each; default: as many as fit in ``BLOCK_BYTES``, at least ``MIN_BLOCK_ROWS``).

    ``X`` may be any object with ``shape`` that returns rows for a slice (a ``_stream.RowView``: its
    ``source_width`` sizes the blocks by the rows it reads)."""
    if block is None:
        width = getattr(X, "source_width", None) or int(np.prod(X.shape[1:], dtype=np.int64)) or 1
        block = max(MIN_BLOCK_ROWS, BLOCK_BYTES // (8 * width))
    for start in range(0, X.shape[0], block):
        rows = slice(start, min(start + block, X.shape[0]))
        yield rows, np.array(X[rows], dtype=np.float64)  # a copy even for float64: callers shift in place


def finite_range(X: np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` of ``X`` (any shape; (0, 0) when empty), or None if it holds a NaN or an inf.

    NaN propagates through ``max`` and ``min``, +inf shows in the max and −inf in the min, so both finite
    proves every entry finite (exactly: no overflow to tell apart, as a sum would need). Both run on one
    cache-sized block (``FINITE_BLOCK_BYTES``) before the next is read, in the array's own dtype: NumPy's
    SIMD min/max make it about 2× faster than a sum and 3× faster than ``isfinite``; a memmap is read once
    and no temporary the size of ``X`` is made.
    """
    if X.size == 0:
        return 0.0, 0.0
    if X.ndim == 0:
        v = float(X)
        return (v, v) if np.isfinite(v) else None
    flat = X.reshape(-1) if X.flags.c_contiguous else None  # contiguous: blocks need not end on a row
    step = max(1, FINITE_BLOCK_BYTES // X.itemsize) if flat is not None else None
    rows = max(1, FINITE_BLOCK_BYTES // max(1, X[:1].nbytes))
    lo, hi = np.inf, -np.inf
    for start in range(0, X.size if flat is not None else X.shape[0], step or rows):
        B = flat[start : start + step] if flat is not None else X[start : start + rows]
        b_hi, b_lo = B.max(), B.min()
        if not (np.isfinite(b_hi) and np.isfinite(b_lo)):
            return None
        lo, hi = min(lo, float(b_lo)), max(hi, float(b_hi))
    return lo, hi


def all_finite(X: np.ndarray) -> bool:
    """True if ``X`` (any shape) has no NaN or inf (:func:`finite_range`, one read, no large temporary)."""
    return finite_range(X) is not None


def argmax_rows(A: np.ndarray, block_rows: int = 256) -> np.ndarray:
    """(N,) int64 row-wise argmax of ``A`` (N, K), first index on ties.

    NumPy's ``argmax`` copies a read-only array whole before scanning it (5x slower on the read-only
    views :class:`Inputs` holds); slices of a few hundred rows make that copy cache-sized.
    """
    out = np.empty(A.shape[0], dtype=np.int64)
    for start in range(0, A.shape[0], block_rows):
        out[start : start + block_rows] = A[start : start + block_rows].argmax(axis=1)
    return out


def resolve_device(device: str | None) -> str:
    """Map ``"auto"``/``None`` to ``"cuda"`` when available, else ``"cpu"``; validate explicit names."""
    if device in (None, "cpu"):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r} but no CUDA GPU is visible; use device='cpu' or 'auto'")
    return device


def gram(X: np.ndarray, *, shift: np.ndarray | None = None, device: str | None = "cpu") -> np.ndarray:
    """(D, D) float64 ``(X − shift)ᵀ(X − shift)``, accumulated over float64 row blocks.

    Args:
        X: (N, D) float32/float64.
        shift: optional (D,) vector subtracted from every row (pass the mean for a centred Gram;
            centring before the product avoids the cancellation of ``G − Nμμᵀ``).
        device: "cpu", "cuda[:i]" or "auto"; on a GPU the blocks are multiplied there in float64.
    """
    device = resolve_device(device)
    D = X.shape[1]
    if device == "cpu":
        G = np.zeros((D, D))
        for _, B in row_blocks(X):
            if shift is not None:
                B -= shift
            G += B.T @ B
            del B  # free this block before the generator allocates the next (peak: one block)
        return G
    import torch

    G_t = torch.zeros((D, D), dtype=torch.float64, device=device)
    s_t = None if shift is None else torch.as_tensor(shift, dtype=torch.float64, device=device)
    for _, B in row_blocks(X):
        B_t = torch.from_numpy(B).to(device, non_blocking=True)
        if s_t is not None:
            B_t -= s_t
        G_t += B_t.T @ B_t
    return G_t.cpu().numpy()


def class_sums(X: np.ndarray, y: np.ndarray, C: int) -> np.ndarray:
    """(C, D) float64 per-class sums ``OᵀX`` for labels ``y`` in ``0..C-1``.

    A segment sum over label-sorted rows (``np.add.reduceat``): no one-hot matrix, no slow scatter.
    """
    S = np.zeros((C, X.shape[1]))
    for rows, B in row_blocks(X):
        yb = y[rows]
        order = np.argsort(yb, kind="stable")
        present, starts = np.unique(yb[order], return_index=True)
        S[present] += np.add.reduceat(B[order], starts, axis=0)
    return S


def matmul_rows(X: np.ndarray, W: np.ndarray, *, shift: np.ndarray | None = None) -> np.ndarray:
    """(N, K) float64 ``(X − shift) W`` over float64 row blocks of X (W is (D, K) float64)."""
    out = np.empty((X.shape[0], W.shape[1]))
    for rows, B in row_blocks(X):
        if shift is not None:
            B -= shift
        out[rows] = B @ W
    return out


def eigh(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric eigendecomposition, ascending eigenvalues (LAPACK ``syevd``: the fast driver)."""
    return scipy.linalg.eigh(A, driver="evd", check_finite=False)


def eigh_top(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenpairs of a symmetric matrix, eigenvalues descending (LAPACK ``syevx``).

    Only the k wanted eigenvectors are back-transformed: several times faster than :func:`eigh`
    for k ≪ D (e.g. a 64-component PCA of a 2048×2048 covariance).
    """
    D = A.shape[0]
    w, V = scipy.linalg.eigh(A, driver="evx", subset_by_index=[D - k, D - 1], check_finite=False)
    return w[::-1], V[:, ::-1]


def eigh_pinv(A: np.ndarray, rcond: float = 1e-15) -> np.ndarray:
    """Pseudo-inverse of a symmetric matrix; eigenvalues with ``|λ| ≤ rcond·max|λ|`` count as zero.

    Equals ``numpy.linalg.pinv(A, rcond)`` for symmetric positive semi-definite ``A``.
    """
    w, V = eigh(A)
    cut = rcond * np.abs(w).max()
    inv = np.where(np.abs(w) > cut, 1.0 / np.where(w == 0, 1.0, w), 0.0)
    return (V * inv) @ V.T


def chol_solve(A: np.ndarray, B: np.ndarray, *, what: str = "matrix") -> np.ndarray:
    """Solve ``A Z = B`` for symmetric positive definite ``A`` by Cholesky.

    Falls back to an eigh pseudo-inverse with a :class:`TransferabilityWarning` if ``A`` is not
    numerically positive definite.
    """
    try:
        factor = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
        return scipy.linalg.cho_solve(factor, B, check_finite=False)
    except np.linalg.LinAlgError:
        warnings.warn(
            f"{what} is not positive definite; solving with an eigh pseudo-inverse instead",
            TransferabilityWarning,
            stacklevel=2,
        )
        return eigh_pinv(A) @ B


def chol_logdet(A: np.ndarray) -> float:
    """``log det A`` for symmetric positive definite ``A`` (Cholesky; falls back to ``slogdet``)."""
    try:
        L = scipy.linalg.cholesky(A, lower=True, check_finite=False)
        return float(2.0 * np.log(np.diag(L)).sum())
    except np.linalg.LinAlgError:
        return float(np.linalg.slogdet(A)[1])


def softmax_rows(L: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Row-wise softmax in float64 (row maximum subtracted first) of ``L`` (N, K).

    ``inplace=True`` overwrites ``L`` when it is already a writable float64 array (a row block the
    caller owns): no N×K temporary.
    """
    Z = np.asarray(L, dtype=np.float64)
    if inplace and Z is L and Z.flags.writeable:
        Z -= Z.max(axis=1, keepdims=True)
    else:
        Z = Z - Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def n_components_for_variance(eigvals_desc: np.ndarray, fraction: float) -> int:
    """Smallest d whose cumulative explained-variance ratio is strictly above ``fraction``.

    Matches scikit-learn's ``searchsorted(cumratio, fraction, side="right") + 1``.
    """
    ratio = np.cumsum(eigvals_desc) / eigvals_desc.sum()
    return int(min(np.searchsorted(ratio, fraction, side="right") + 1, len(eigvals_desc)))


def pca_exact(
    X: np.ndarray,
    k: int | float,
    *,
    mean: np.ndarray | None = None,
    centered_gram: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact PCA scores of ``X`` (no whitening).

    Args:
        X: (N, D) features.
        k: number of components (int) or a variance fraction in (0, 1) (float, see
            :func:`n_components_for_variance`).
        mean, centered_gram: the precomputed (D,) mean and (D, D) centred Gram, if available.

    Returns:
        ``(Z, eigvals)``: (N, d) float64 scores ``(X − μ) V_d`` and the (min(N, D),) covariance
        eigenvalues in descending order (ddof 0).
    """
    N, D = X.shape
    mu = X.mean(axis=0, dtype=np.float64) if mean is None else mean
    if N >= D:
        G = gram(X, shift=mu) if centered_gram is None else centered_gram
        w, V = eigh(G)
        w, V = np.clip(w[::-1], 0, None) / N, V[:, ::-1]
    else:  # thin side: eigenvectors of the N×N Gram of the centred rows
        Xc = np.asarray(X, dtype=np.float64) - mu
        w, U = eigh(Xc @ Xc.T)
        w, U = np.clip(w[::-1], 0, None), U[:, ::-1]
        keep = w > w[0] * max(N, D) * EPS64
        w, U = w[keep], U[:, keep]
        V = (Xc.T @ U) / np.sqrt(w)
        w = w / N
    d = n_components_for_variance(w, k) if isinstance(k, float) else int(min(k, V.shape[1]))
    return matmul_rows(X, V[:, :d], shift=mu), w


def stratified_permutation(y: np.ndarray, seed: int | Sequence[int]) -> np.ndarray:
    """A seeded permutation of ``0..N-1`` grouped by class, for stratified folds and subsamples.

    ``seed``: an int, or a sequence of ints (``(seed, draw)``: one independent stream per draw, as
    :func:`numpy.random.default_rng` reads it).

    Samples are shuffled, then grouped by class (classes in order of their first shuffled sample,
    members in shuffled order). Taking every ``F``-th position gives stratified folds; taking
    evenly spaced positions gives a stratified subsample. The result does not depend on how the
    classes are named (relabelling-invariant).
    """
    perm = np.random.default_rng(seed).permutation(len(y))
    _, first, code = np.unique(y[perm], return_index=True, return_inverse=True)
    class_rank = np.empty(len(first), dtype=np.int64)
    class_rank[np.argsort(first)] = np.arange(len(first))
    return perm[np.argsort(class_rank[code.reshape(-1)], kind="stable")]
