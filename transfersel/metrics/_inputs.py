"""Validate metric inputs once, at the boundary (scikit-learn's ``check_array`` style).

:class:`Inputs` is the validated bundle every metric receives. It never copies the caller's feature
matrix unless it has to (torch tensor, float16, non-contiguous), exposes it read-only, and caches the
statistics that several metrics share (class sums, the float64 Gram), so scoring many metrics on one
feature set pays for the expensive linear algebra once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import _linalg as la
from transfersel.metrics._reduce import effective_dim, project

# Features whose largest |x| lies within 2^±SAFE_EXPONENT (about 1e±6) are scored as they are; outside,
# scale-invariant metrics rescale them by an exact power of two and the others warn (issue 14).
SAFE_EXPONENT = 20
# 2^1000 ≈ 1e301: beyond it (with the N·D of a Gram folded in) squares overflow or underflow float64
FLOAT64_EXPONENT = 1000
# Metrics whose algorithm cannot stream (nleep's GMM, knn's neighbour search, parc's N×N RDM, linear's
# fitted folds) score a seeded class-stratified subsample of this many rows above it (spec scale.md §2).
SUBSAMPLE_CAP = 20_000
SUBSAMPLE_SEED = 0


def to_numpy(a: Any, name: str) -> np.ndarray:
    """Return ``a`` as a NumPy array without copying NumPy input (torch tensors are moved to the CPU)."""
    if a is None:
        raise InputError(f"{name} is None; pass an array")
    if type(a).__module__.startswith("torch"):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as exc:  # e.g. ragged lists
        raise InputError(
            f"{name} cannot be converted to an array ({exc}); pass a NumPy array or tensor"
        ) from None


def _check_float_matrix(a: Any, name: str, *, ndim: int = 2) -> np.ndarray:
    return _checked(a, name, ndim=ndim)[0]


def _checked(a: Any, name: str, *, ndim: int = 2) -> tuple[np.ndarray, tuple[float, float]]:
    """The read-only, contiguous float32/float64 view of ``a``, and its (min, max) from the finite check."""
    arr = to_numpy(a, name)
    if arr.ndim != ndim:
        raise InputError(f"{name} must be {ndim}-D, got shape {arr.shape}; reshape it")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape}); pass at least 2 samples with 1+ dimensions")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.float32, np.float64):
        raise InputError(
            f"{name} must be float32 or float64, got {arr.dtype}; cast it with .astype(np.float32)"
        )
    extremes = la.finite_range(arr)
    if extremes is None:
        raise InputError(f"{name} contains NaN or inf; drop or impute those rows before scoring")
    arr = np.ascontiguousarray(arr)
    view = arr.view()
    view.flags.writeable = False  # any accidental in-place write in a metric raises instead of corrupting
    return view, extremes


def encode_labels(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Map any hashable label values to ``0..C-1`` in sorted order of the unique values.

    Returns ``(codes, classes)``: ``codes`` is int64 (N,), ``classes[codes] == labels``.
    """
    arr = to_numpy(labels, "labels")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(f"labels must be 1-D (one label per sample), got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError("labels contain NaN or inf; remove those samples")
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError:
        raise InputError(
            "labels mix types that cannot be sorted; use one type (all str or all int)"
        ) from None
    return codes.reshape(-1).astype(np.int64), classes


@dataclass(frozen=True, eq=False)
class Inputs:
    """Validated metric inputs.

    Attributes:
        X: (N, D) float32 or float64, read-only, C-contiguous: the caller's features (not copied
            when already a contiguous float NumPy array).
        y: (N,) int64 labels in ``0..C-1``.
        classes: (C,) the original label values, ``classes[y]`` gives them back.
        counts: (C,) int64 samples per class.
        logits: (N, K) float32/float64 read-only source-model logits or ``None``.
        label_embeddings: (K, C, D2) float64 per-class embeddings (class axis in remapped order) or ``None``.
        device: where the N·D² Gram products run ("cpu", "cuda[:i]"); results are float64 either way.
    """

    X: np.ndarray
    y: np.ndarray
    classes: np.ndarray
    counts: np.ndarray
    logits: np.ndarray | None = None
    label_embeddings: np.ndarray | None = None
    device: str = "cpu"
    _reduced: dict[int, Inputs] = field(default_factory=dict, repr=False, compare=False)
    _source: Inputs | None = field(default=None, repr=False, compare=False)
    _subsamples: dict[tuple[int, int], Inputs] = field(default_factory=dict, repr=False, compare=False)
    # metric results on these inputs, by (metric, reduce, options): a metric asked for twice on one model
    # (by itself and inside ``auto``) is computed once; its warnings are replayed (Metric._run)
    _results: dict[tuple[str, str, str], tuple[Any, list]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # (min, max) of X seen by the finite check (None: not seen); :meth:`with_features` resets it with X
    _extremes: tuple[float, float] | None = field(default=None, repr=False, compare=False)

    @property
    def unreduced(self) -> Inputs:
        """The inputs these were reduced from (``self`` when not reduced): for a component that is
        defined on the features as they are (ETran's energy)."""
        return self if self._source is None else self._source

    @property
    def N(self) -> int:
        return self.X.shape[0]

    @property
    def D(self) -> int:
        return self.X.shape[1]

    @property
    def C(self) -> int:
        return len(self.classes)

    @cached_property
    def class_sums(self) -> np.ndarray:
        """(C, D) float64 per-class feature sums ``OᵀX``."""
        return la.class_sums(self.X, self.y, self.C)

    @cached_property
    def class_means(self) -> np.ndarray:
        """(C, D) float64 class means."""
        return self.class_sums / self.counts[:, None]

    @cached_property
    def mean(self) -> np.ndarray:
        """(D,) float64 global mean."""
        return self.class_sums.sum(axis=0) / self.N

    @cached_property
    def centered_gram(self) -> np.ndarray:
        """(D, D) float64 ``(X − μ)ᵀ(X − μ)`` (centred blockwise: no cancellation, no N×D copy)."""
        return la.gram(self.X, shift=self.mean, device=self.device)

    def within_scatter(self) -> np.ndarray:
        """(D, D) float64 ``N·Sw = Σ_i (x_i − μ_{y_i})(x_i − μ_{y_i})ᵀ`` from the centred Gram."""
        G = self.centered_gram  # first: its Gram's own temporaries then come before ``between`` exists
        d = self.class_means - self.mean
        between = (d.T * self.counts) @ d
        return np.subtract(G, between, out=between)  # one new D×D array, not two

    def with_features(self, X: Any, **changes: Any) -> Inputs:
        """These inputs with features ``X`` (and any other ``changes``): every value derived from the old X
        (projections, subsamples, remembered metric results, extremes) starts afresh."""
        fresh = {"_reduced": {}, "_subsamples": {}, "_results": {}, "_extremes": None}
        return replace(self, X=X, **{**fresh, **changes})

    def reduced(self, reduce: int | str | None) -> Inputs:
        """These inputs with X replaced by its (N, d) scores on the top-d principal axes (spec §2).

        ``reduce``: None (returns ``self``), a positive int d, or "auto" (:func:`auto_dim`); d ≥ D also
        returns ``self``. Cached per d, so metrics scored on the same inputs share one projection and one
        Gram of the projected features. Labels, logits and label embeddings are kept.
        """
        d = effective_dim(reduce, self.N, self.D, self.C)
        if d is None:
            return self
        if d not in self._reduced:
            G = self.centered_gram if self.N >= self.D else None
            Z = project(self.X, d, mean=self.mean, centered_gram=G)
            self._reduced[d] = self.with_features(Z, _source=self)
        return self._reduced[d]

    def subsampled(self, n: int, seed: int = SUBSAMPLE_SEED) -> Inputs:
        """These inputs restricted to a seeded class-stratified subsample of ``n < N`` rows (in file order).

        Evenly spaced positions of :func:`stratified_permutation` keep each class's share (±1 row); a class
        left with no row is dropped from ``classes`` (and from axis 1 of the label embeddings). Only the
        kept rows are read (a memmap is gathered, not copied whole). Cached per ``(n, seed)``.
        """
        if (n, seed) not in self._subsamples:
            order = la.stratified_permutation(self.y, seed)
            keep = np.sort(order[(np.arange(n) * self.N) // n])
            present, y = np.unique(self.y[keep], return_inverse=True)
            X = np.ascontiguousarray(self.X[keep])  # the gather is the only copy
            X.flags.writeable = False
            L = None if self.logits is None else np.array(self.logits[keep])
            E = None if self.label_embeddings is None else self.label_embeddings[:, present]
            self._subsamples[(n, seed)] = self.with_features(
                X,
                y=y.reshape(-1).astype(np.int64),
                classes=self.classes[present],
                counts=np.bincount(y.reshape(-1), minlength=len(present)).astype(np.int64),
                logits=L,
                label_embeddings=E,
                _source=None,
            )
        return self._subsamples[(n, seed)]

    @cached_property
    def scale_exponent(self) -> int:
        """``e`` with ``2^e`` the power of two nearest ``max|X|`` (0 for all-zero features)."""
        if self._extremes is not None:  # the finite check's: no second read of X
            lo, hi = self._extremes
        else:
            lo, hi = float(np.min(self.X)), float(np.max(self.X))  # no |X| temporary
        peak = max(hi, -lo)
        return int(np.round(np.log2(peak))) if peak > 0 else 0

    def normalised(self) -> Inputs:
        """These inputs with ``X`` rescaled by an exact power of two to ``max|X| ≈ 1`` when it lies outside
        ``2^±SAFE_EXPONENT``; ``self`` otherwise (so in-range results are unchanged bit for bit).

        For metrics whose definition is invariant to ``X → sX`` (s > 0): the rescaling is exact in
        floating point and keeps their Grams and absolute guards (std floors, ridges) in range.
        Copies X once (N, D), in its own dtype, only when it rescales.
        """
        return self._rescaled

    @cached_property
    def _rescaled(self) -> Inputs:
        e = self.scale_exponent
        if abs(e) <= SAFE_EXPONENT:
            return self
        X = np.ldexp(self.X, -e).astype(self.X.dtype, copy=False)  # exact: only the exponent changes
        X.flags.writeable = False
        return self.with_features(X)

    def scale_unsafe(self, metric: str, *, why: str, power: int = 2) -> bool:
        """For a metric whose value depends on the feature scale (``why`` names the constant that
        sets it): warn if ``max|X|`` is outside ``2^±SAFE_EXPONENT``; return True, after a warning that
        the score is nan, if the ``power``-th powers of X it forms (2: Grams) would overflow or
        underflow float64."""
        e = self.scale_exponent
        if abs(e) <= SAFE_EXPONENT:
            return False
        lost = power * abs(e) + np.log2(self.N * self.D) > FLOAT64_EXPONENT
        warnings.warn(
            f"{metric}: features have max |x| ≈ 2^{e} (≈ 1e{e * np.log10(2):+.0f}), far from unit scale; "
            f"{metric} depends on the feature scale through {why}"
            + (f"; its x^{power} terms leave the float64 range, returning nan" if lost else "")
            + ". Standardise the features (or rescale them by a constant) before scoring",
            TransferabilityWarning,
            stacklevel=4,
        )
        return bool(lost)

    def require(self, *names: str, metric: str) -> None:
        """Raise a clear error if an optional input the metric needs is missing."""
        flags = {"logits": "--logits L.npy", "label_embeddings": "--label-embeddings E.npy"}
        for name in names:
            if getattr(self, name) is None:
                raise InputError(f"{metric} needs {name}; pass {name}=... (CLI: {flags[name]})")


def check_inputs(
    features: Any,
    labels: Any,
    *,
    logits: Any = None,
    label_embeddings: Any = None,
    device: str | None = "cpu",
) -> Inputs:
    """Validate and normalise metric inputs; never mutates or (needlessly) copies them.

    Args:
        features: (N, D) float32/float64 NumPy array, memmap or torch tensor.
        labels: (N,) labels of any sortable hashable type.
        logits: optional (N, K) source logits (softmax is taken by the metrics that need it).
        label_embeddings: optional (K, C, D2) per-class embeddings, class axis in sorted label order.
        device: "cpu", "cuda[:i]" or "auto" (GPU if present) for the Gram products.

    Raises:
        InputError: on shape/dtype mismatches, NaN/inf, fewer than 2 classes, empty arrays.
    """
    X, (lo, hi) = _checked(features, "features")
    y, classes = encode_labels(labels)
    if len(y) != X.shape[0]:
        raise InputError(
            f"features has {X.shape[0]} rows but labels has {len(y)}; pass one label per feature row"
        )
    if len(classes) < 2:
        raise InputError(
            f"labels have {len(classes)} distinct value(s); a transfer task needs at least 2 classes"
        )
    counts = np.bincount(y, minlength=len(classes)).astype(np.int64)
    if (counts == 1).any():
        singles = [str(c) for c in classes[counts == 1][:5]]
        warnings.warn(
            f"{int((counts == 1).sum())} class(es) have a single sample ({', '.join(singles)}…): their "
            "within-class statistics are zero",
            TransferabilityWarning,
            stacklevel=3,
        )
    L = None
    if logits is not None:
        L = _check_float_matrix(logits, "logits")  # kept in its dtype: metrics stream it in float64 blocks
        if L.shape[0] != X.shape[0]:
            raise InputError(f"logits has {L.shape[0]} rows but features has {X.shape[0]}; they must align")
    E = None
    if label_embeddings is not None:
        E = np.asarray(_check_float_matrix(label_embeddings, "label_embeddings", ndim=3), dtype=np.float64)
        if E.shape[1] != len(classes):
            raise InputError(
                f"label_embeddings has {E.shape[1]} classes on axis 1 but labels have {len(classes)}; "
                "shape must be (K, C, D2) in sorted label order"
            )
    return Inputs(
        X=X,
        y=y,
        classes=classes,
        counts=counts,
        logits=L,
        label_embeddings=E,
        device=la.resolve_device(device),
        _extremes=(lo, hi),
    )


def reduce_features(features: Any, d: int | str) -> np.ndarray:
    """(N, d') float64 scores of ``features`` (N, D) on their top-d principal axes; never mutates them.

    ``d``: a positive int or "auto" (needs labels, so here it is an error); d' = min(d, D, rank).
    Centred, exact eigendecomposition, each axis signed so that its largest-magnitude loading is positive.
    """
    if isinstance(d, str):
        raise InputError("reduce_features needs an int d; 'auto' depends on the classes: use Inputs.reduced")
    X = _check_float_matrix(features, "features")
    k = effective_dim(d, X.shape[0], X.shape[1], 1)
    mean = X.mean(axis=0, dtype=np.float64)
    return project(X, X.shape[1] if k is None else k, mean=mean)
