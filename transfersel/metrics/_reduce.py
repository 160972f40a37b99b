"""Dimension handling for the D×D metrics (spec selection.md §2): ``reduce=None | d | "auto"``.

``reduce=d`` centres the target features and projects them on their top-d principal axes (exact
eigendecomposition, one sign convention: the largest-magnitude loading of every axis is positive), so
the metric scores N×d features. ``"auto"`` picks ``d*(N, D, C)`` from :func:`auto_dim`, whose constants
live in ``transfersel/selection.json`` (key ``"reduce"``). :func:`saturation` names the regime in which an
unreduced metric gives every model (nearly) its limit value.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.errors import InputError
from transfersel.metrics._linalg import EPS64, eigh, eigh_top, gram, matmul_rows

SELECTION_FILE = Path(__file__).resolve().parents[1] / "selection.json"

# metric -> (condition on n, d, c, what it means); the LDA/Gaussian metrics of spec §2
_SATURATION = {
    "sfda": (
        lambda n, d, c: n - c <= d,
        "N - C = {nc} <= D = {d}",
        "the classes are linearly separable, every score near its limit 1",
    ),
    "hscore": (
        lambda n, d, c: n - 1 <= d,
        "N - 1 = {n1} <= D = {d}",
        "the covariance is singular, every score near its limit C - 1",
    ),
    "emms": (
        lambda n, d, c: n - 1 <= d,
        "N - 1 = {n1} <= D = {d}",
        "the features fit any target, every score near its limit 0",
    ),
    "transrate": (
        lambda n, d, c: n / c <= d,
        "N / C = {nper:.0f} <= D = {d}",
        "the class coding rates mostly count samples",
    ),
}


@lru_cache(maxsize=1)
def _rule() -> dict[str, Any]:
    return json.loads(SELECTION_FILE.read_text())["reduce"]


def default_reduce_setting() -> str:
    """The ``reduce`` that rank/evaluate/ensemble/demo use when none is given: ``selection.json`` "reduce" →
    "default" (chosen on the offline benchmark; "none" when the file names none)."""
    return str(_rule().get("default", "none"))


def auto_dim(n: int, d: int, c: int) -> int:
    """``d*(N, D, C) = min(D, N − 1, max(C, ⌊f·(N − C)⌋))``, ``f`` from ``selection.json`` ("reduce")."""
    f = float(_rule()["fraction"])
    return int(max(1, min(d, n - 1, max(c, math.floor(f * (n - c))))))


def effective_dim(reduce: int | str | None, n: int, d: int, c: int) -> int | None:
    """The dimension a metric will score for ``reduce`` on N×D features with C classes.

    ``reduce``: None or "none" (the CLI spelling), a positive int d, or "auto" (:func:`auto_dim`).
    Returns ``None`` when the features are used as they are (``reduce=None``, or ``d ≥ D``).
    Centred data have rank ≤ N − 1, so more axes than that are never kept.

    Raises:
        InputError: ``reduce`` is not None, "auto" or a positive int.
    """
    if reduce is None or (isinstance(reduce, str) and reduce.lower() == "none"):
        return None
    if isinstance(reduce, str) and reduce == "auto":
        k = auto_dim(n, d, c)
    elif isinstance(reduce, (int, np.integer)) and not isinstance(reduce, bool) and reduce >= 1:
        k = int(reduce)
    else:
        raise InputError(f"reduce must be None, 'auto' or a positive int, got {reduce!r}")
    return None if k >= d else min(k, max(n - 1, 1))


def saturation(metric_name: str, n: int, d: int, c: int) -> str | None:
    """One line saying that ``metric_name`` on N×D features with C classes is in its saturated regime.

    ``d`` is the dimension the metric scores (the reduced one when reduced). Returns ``None`` when it is
    not saturated, or for a metric without such a regime.
    """
    entry = _SATURATION.get(metric_name)
    if entry is None or not entry[0](n, d, c):
        return None
    cond = entry[1].format(nc=n - c, n1=n - 1, nper=n / c, d=d)
    return f"{metric_name}: {cond}: saturated regime, {entry[2]}; use --reduce auto"


def principal_axes(
    X: np.ndarray, k: int, *, mean: np.ndarray, centered_gram: np.ndarray | None = None
) -> np.ndarray:
    """(D, k') float64 top principal axes of X, k' = min(k, numerical rank), descending variance.

    N ≥ D: the top eigenvectors of the centred Gram; N < D: from the N×N Gram of the centred rows.
    Each axis is signed so that its largest-magnitude loading is positive.
    """
    N, D = X.shape
    if N >= D:
        G = gram(X, shift=mean) if centered_gram is None else centered_gram
        V = eigh_top(G, k)[1]
    else:
        Xc = np.asarray(X, dtype=np.float64) - mean
        w, U = eigh(Xc @ Xc.T)
        w, U = w[::-1], U[:, ::-1]
        keep = w > max(w[0], 0.0) * max(N, D) * EPS64
        k = min(k, int(keep.sum()))
        V = (Xc.T @ U[:, :k]) / np.sqrt(w[:k])
    top = np.abs(V).argmax(axis=0)
    return V * np.sign(V[top, np.arange(V.shape[1])])


def project(
    X: np.ndarray, k: int, *, mean: np.ndarray, centered_gram: np.ndarray | None = None
) -> np.ndarray:
    """(N, k') float64 read-only scores ``(X − μ) V_k`` on the top-k principal axes."""
    Z = matmul_rows(X, principal_axes(X, k, mean=mean, centered_gram=centered_gram), shift=mean)
    Z.flags.writeable = False
    return Z
