"""Out-of-core scoring: matrices read in row blocks, never built whole (spec scale.md §2).

Every streaming metric touches its (N, D) features only through :func:`~._linalg.row_blocks`: float64
copies of consecutive row blocks, ``BLOCK_BYTES`` (16 MiB) of rows each and at least ``MIN_BLOCK_ROWS``
(256), every sum accumulated in float64 block by block. What a metric keeps between blocks are sufficient
statistics: the class counts, the (C, D) class sums (:attr:`Inputs.class_sums`), the (D, D) centred Gram
(:attr:`Inputs.centered_gram`), per-row scalars (N,) and small projected moments (C, k). A memmapped
``.npy`` is therefore scored with O(D² + C·D + N·C) memory, and an in-memory matrix goes through the very
same code (one or more blocks), so the two agree to float64 roundoff of the block order.

:class:`RowView` lets a matrix that is a row-wise function of the features (SFDA's ConfMix X̃, the rows
of one class for TransRate, GBC's projected and centred squares) go through the same passes unbuilt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from transfersel.metrics._linalg import class_sums, row_blocks


class RowView:
    """An (n, width) matrix read only by row slices: ``transform(rows, base[index[rows]])``.

    Args:
        base: (N, D) array or memmap the rows come from.
        index: optional (n,) row indices into ``base`` (ascending reads a memmap sequentially); all rows
            when None.
        transform: optional ``f(rows, block) -> (len(block), width)`` float64 rows; ``block`` is a
            float64 copy of the selected base rows that ``f`` may overwrite.
        width: the output width (default D); ``dtype``: the dtype the view reports (default ``base``'s).

    ``source_width`` is D: :func:`row_blocks` sizes its blocks by the rows read, not by ``width``.
    """

    ndim = 2

    def __init__(
        self,
        base: np.ndarray,
        *,
        index: np.ndarray | None = None,
        transform: Callable[[slice, np.ndarray], np.ndarray] | None = None,
        width: int | None = None,
        dtype: np.dtype | None = None,
    ) -> None:
        self.base, self.index, self.transform = base, index, transform
        n = base.shape[0] if index is None else len(index)
        self.shape = (n, base.shape[1] if width is None else width)
        self.source_width = base.shape[1]
        self.dtype = np.dtype(base.dtype if dtype is None else dtype)

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice):
            raise TypeError("a RowView is read by row slices only")
        source = self.base[rows] if self.index is None else self.base[self.index[rows]]
        block = np.array(source, dtype=np.float64)
        return block if self.transform is None else self.transform(rows, block)


def projected_class_scatter(
    X: np.ndarray, y: np.ndarray, C: int, V: np.ndarray, *, mean: np.ndarray, class_means: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean and ddof-0 variance of the scores ``Z = (X − μ) V`` without building Z (N, k).

    The class means of Z are ``m_c = (μ_c − μ) V`` (linear: from the class means of X, no pass); the
    variances are the class sums of ``(Z − m_{y})²`` in one pass, centred before squaring (no cancellation).

    Returns:
        ``(m, var)``: (C, k) float64 each.
    """
    m = (class_means - mean) @ V
    counts = np.bincount(y, minlength=C)[:, None]

    def centred_squares(rows: slice, B: np.ndarray) -> np.ndarray:
        B -= mean
        Z = B @ V
        Z -= m[y[rows]]
        return np.square(Z, out=Z)

    view = RowView(X, transform=centred_squares, width=V.shape[1])
    return m, class_sums(view, y, C) / counts


def class_rows(y: np.ndarray, counts: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(c, rows)`` for each class c with samples, ``rows`` ascending (a memmap is read forwards)."""
    order = np.argsort(y, kind="stable")
    ends = np.cumsum(counts)
    for c, (n_c, end) in enumerate(zip(counts, ends, strict=True)):
        if n_c:
            yield c, order[end - n_c : end]


def projected_class_blocks(
    X: np.ndarray, y: np.ndarray, counts: np.ndarray, V: np.ndarray, *, mean: np.ndarray
) -> Iterator[tuple[int, np.ndarray]]:
    """``(c, Z_block)``: the scores ``(X − μ) V`` (rows, k) of class c's rows, class by class, in row blocks
    of the rows read; Z (N, k) is never built."""

    def project(_: slice, B: np.ndarray) -> np.ndarray:
        B -= mean
        return B @ V

    for c, rows in class_rows(y, counts):
        for _, Z in row_blocks(RowView(X, index=rows, transform=project, width=V.shape[1])):
            yield c, Z
