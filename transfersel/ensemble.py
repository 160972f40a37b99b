"""Ensemble selection: k models that are both transferable and complementary (spec §6.2, our own method).

Greedy and deterministic. Given each model's score ``s_m`` from any metric and its features ``X_m`` on the
same samples:

1. transferability over the zoo, ``t_m = (s_m − min s)/(max s − min s)`` (1 if all equal; NaN scores are
   excluded from selection);
2. each model's Fisher features ``Z_m = (X_m − μ) V`` (N × (C−1), ``‖Z_m‖_F = 1``), ``V`` the top ``C − 1``
   generalised eigenvectors of ``(Sb, B)``, ``B`` SFDA's stage-1 regularised within-class scatter (§2.1);
3. complementarity of a candidate against the selected set ``S``: ``nuclear``
   ``g = (‖[Z_S | Z_m]‖_* − ‖Z_S‖_*)/‖Z_m‖_*`` ∈ [0, 1] (1 when orthogonal, √2 − 1 ≈ 0.41 for an exact
   duplicate of one selected model), or ``cka`` ``g = 1 − max_{n∈S} CKA(Z_m, Z_n)`` (linear CKA);
4. start from ``argmax t``; add ``argmax r·t_m + (1 − r)·g_m(S)`` until k are chosen; ties go to the larger
   ``t_m``, then to zoo order.

``mode="sfda-oneshot"`` is our reading of the SFDA paper's Eq. 8–9 (unverified, §6.1): the leave-one-out
nuclear contribution of every model over the whole zoo, min–max normalised to ``ĉ_m``, ranked once by
``r·t_m + (1 − r)·ĉ_m``.

All nuclear norms and CKAs come from one Gram of the stacked Fisher features (width M·(C−1)), so the selection
itself costs only small eigendecompositions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg

from transfersel.agreement import minmax
from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import check_inputs, encode_labels
from transfersel.metrics import linalg as la

__all__ = ["Ensemble", "Pick", "ensemble_probe_accuracy", "fisher_features", "select", "stratified_rows"]

Complementarity = Literal["nuclear", "cka"]
Mode = Literal["greedy", "sfda-oneshot"]


@dataclass(frozen=True)
class Pick:
    """One selected model and why.

    ``score`` is the metric's raw score, ``t`` its zoo-normalised transferability, ``g`` its complementarity
    against the models picked before it (1 for the first pick; ``ĉ`` in sfda-oneshot mode) and
    ``objective = r·t + (1 − r)·g``.
    """

    model: str
    score: float
    t: float
    g: float
    objective: float


@dataclass(frozen=True)
class Ensemble:
    """The selected models in pick order, and the top-k by score alone for comparison.

    ``excluded`` lists the models whose score was NaN (never selected).
    """

    picks: tuple[Pick, ...]
    top_k_by_score: tuple[str, ...]
    metric: str
    k: int
    r: float
    complementarity: str
    mode: str
    excluded: tuple[str, ...] = ()

    @property
    def models(self) -> list[str]:
        return [p.model for p in self.picks]


def stratified_rows(labels: Any, *, max_rows: int = 5000, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` samples, class-stratified (at least one per class), seeded."""
    y, _ = encode_labels(labels)
    N = y.size
    if N <= max_rows:
        return np.arange(N)
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    take = np.maximum(1, np.floor(counts * max_rows / N).astype(np.int64))
    picked = [rng.choice(np.flatnonzero(y == c), size=int(n), replace=False) for c, n in enumerate(take)]
    return np.sort(np.concatenate(picked))


def fisher_features(features: Any, labels: Any, *, shrinkage: float | None = None) -> np.ndarray:
    """(N, min(C−1, D)) float64 Fisher features of one model, scaled to unit Frobenius norm (§6.2 step 2).

    ``B`` is SFDA's stage-1 regularised within-class scatter; ``V`` solves ``Sb v = λ B v`` (Cholesky
    ``B = LLᵀ``, eigh of ``L⁻¹ Sb L⁻ᵀ``), largest ``λ`` first.
    """
    from transfersel.metrics.sfda import regularised_scatter

    inputs = check_inputs(features, labels)
    B, _ = regularised_scatter(inputs)
    d = inputs.class_means - inputs.mean
    Sb = (d.T * (inputs.counts / inputs.N)) @ d
    try:
        L = scipy.linalg.cholesky(B, lower=True, check_finite=False)
        whiten = scipy.linalg.solve_triangular(L, np.eye(inputs.D), lower=True, check_finite=False).T  # L⁻ᵀ
    except np.linalg.LinAlgError:
        warnings.warn(
            "ensemble: the regularised scatter is not positive definite; whitening with its pseudo-inverse",
            TransferabilityWarning,
            stacklevel=2,
        )
        w, U = la.eigh(B)
        keep = w > 1e-15 * w.max()
        whiten = U[:, keep] / np.sqrt(w[keep])
    _, E = la.eigh(whiten.T @ Sb @ whiten)
    n_dims = min(inputs.C - 1, E.shape[1])
    V = whiten @ E[:, ::-1][:, :n_dims]
    Z = la.matmul_rows(inputs.X, V, shift=inputs.mean)
    norm = np.linalg.norm(Z)
    return Z / norm if norm > 0 else Z


def _nuclear(G: np.ndarray) -> float:
    """Nuclear norm of ``Z`` from its Gram ``ZᵀZ`` (sum of the singular values).

    Eigenvalues at round-off level are zero: their square roots (~1e-8) would otherwise add up.
    """
    w = la.eigh(G)[0]
    w[w <= w[-1] * len(w) * la.EPS64] = 0.0
    return float(np.sqrt(w).sum())


class _Stack:
    """The Gram of all models' stacked Fisher features; nuclear norms and CKAs of any subset of blocks."""

    def __init__(self, Z: Sequence[np.ndarray]):
        widths = [z.shape[1] for z in Z]
        edges = np.concatenate([[0], np.cumsum(widths)])
        self.cols = [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        stacked = np.concatenate(Z, axis=1)  # Fisher features are centred already (CKA needs that)
        self.G = stacked.T @ stacked
        self.own = [_nuclear(self.G[np.ix_(c, c)]) for c in self.cols]

    def nuclear(self, blocks: Sequence[int]) -> float:
        if not blocks:
            return 0.0
        idx = np.concatenate([self.cols[b] for b in blocks])
        return _nuclear(self.G[np.ix_(idx, idx)])

    def cka(self, i: int, j: int) -> float:
        ci, cj = self.cols[i], self.cols[j]
        cross = np.linalg.norm(self.G[np.ix_(ci, cj)]) ** 2
        den = np.linalg.norm(self.G[np.ix_(ci, ci)]) * np.linalg.norm(self.G[np.ix_(cj, cj)])
        return float(cross / den) if den > 0 else 0.0

    def gain(self, m: int, selected: Sequence[int], how: Complementarity) -> float:
        if not selected:
            return 1.0
        if how == "cka":
            return 1.0 - max(self.cka(m, n) for n in selected)
        if self.own[m] == 0:
            return 0.0
        return (self.nuclear([*selected, m]) - self.nuclear(selected)) / self.own[m]


def select(
    names: Sequence[str],
    scores: Sequence[float],
    features: Sequence[Any],
    labels: Any,
    *,
    k: int,
    r: float = 0.5,
    complementarity: Complementarity = "nuclear",
    mode: Mode = "greedy",
    metric: str = "",
    max_rows: int = 5000,
    seed: int = 0,
) -> Ensemble:
    """Select ``k`` models by transferability and complementarity (spec §6.2); deterministic.

    Args:
        names, scores, features: aligned per model (zoo order): name, score (higher is better, NaN excluded),
            (N, D_m) features on the same N samples.
        labels: (N,) labels shared by all models.
        k: ensemble size (at most the number of models with a finite score).
        r: weight of transferability against complementarity.
        complementarity: "nuclear" or "cka" (greedy mode only; sfda-oneshot is nuclear).
        mode: "greedy" (ours) or "sfda-oneshot" (our reading of SFDA Eq. 8–9, unverified).
        max_rows, seed: the class-stratified rows shared by every model's Fisher features.
    """
    if not len(names) == len(scores) == len(features):
        raise InputError(
            f"{len(names)} names, {len(scores)} scores, {len(features)} feature sets; align them"
        )
    if complementarity not in ("nuclear", "cka"):
        raise InputError(f"complementarity must be 'nuclear' or 'cka', got {complementarity!r}")
    if mode not in ("greedy", "sfda-oneshot"):
        raise InputError(f"mode must be 'greedy' or 'sfda-oneshot', got {mode!r}")
    if not 0.0 <= r <= 1.0:
        raise InputError(f"r must be in [0, 1], got {r}")
    t_all = minmax(scores)
    usable = [i for i in range(len(names)) if math.isfinite(t_all[i])]
    if not 1 <= k <= len(usable):
        raise InputError(
            f"k={k} but {len(usable)} model(s) have a finite score; pass 1 <= k <= {len(usable)}"
        )
    rows = stratified_rows(labels, max_rows=max_rows, seed=seed)
    y = np.asarray(labels)[rows]
    stack = _Stack([fisher_features(np.asarray(features[i])[rows], y) for i in usable])
    t = t_all[usable]

    if mode == "greedy":
        order: list[int] = []
        gains: list[float] = []
        while len(order) < k:
            candidates = [j for j in range(len(usable)) if j not in order]
            g = {j: stack.gain(j, order, complementarity) for j in candidates}
            # max objective, then larger t, then zoo order (smaller index)
            best = max(candidates, key=lambda j: (r * t[j] + (1 - r) * g[j], t[j], -j))
            order.append(best)
            gains.append(g[best])
    else:
        everything = list(range(len(usable)))
        total = stack.nuclear(everything)
        loo = np.array([total - stack.nuclear([j for j in everything if j != m]) for m in everything])
        c_hat = minmax(loo)
        ranked = sorted(everything, key=lambda j: (-(r * t[j] + (1 - r) * c_hat[j]), -t[j], j))
        order = ranked[:k]
        gains = [float(c_hat[j]) for j in order]

    picks = tuple(
        Pick(
            model=names[usable[j]],
            score=float(scores[usable[j]]),
            t=float(t[j]),
            g=float(gj),
            objective=float(r * t[j] + (1 - r) * gj),
        )
        for j, gj in zip(order, gains, strict=True)
    )
    by_score = sorted(usable, key=lambda i: (-t_all[i], i))[:k]
    return Ensemble(
        picks=picks,
        top_k_by_score=tuple(names[i] for i in by_score),
        metric=metric,
        k=k,
        r=r,
        complementarity="nuclear" if mode == "sfda-oneshot" else complementarity,
        mode=mode,
        excluded=tuple(n for i, n in enumerate(names) if i not in usable),
    )


def ensemble_probe_accuracy(
    train_features: Sequence[Any],
    train_labels: Any,
    test_features: Sequence[Any],
    test_labels: Any,
    *,
    n_components: int = 256,
    Cs: Sequence[float] = (1e-2, 1e-1, 1.0),
    val_fraction: float = 0.2,
    seed: int = 0,
) -> float:
    """How good a set of models is together (spec §6.3): test accuracy (%) of an L2 logistic regression on
    their concatenated, per-model standardised, PCA-``n_components`` features.

    Args:
        train_features, test_features: aligned per model, (N_train, D_m) and (N_test, D_m); one model is a
            single-model probe on the same footing.
        train_labels, test_labels: (N_train,), (N_test,) any label values; every test class is in train.
        Cs: inverse L2 strengths (as in scikit-learn), chosen on a stratified ``val_fraction`` of train;
            the best (ties: the smaller) is refitted on all of train and scored on test — top-1, or mean
            per-class accuracy when the test classes are imbalanced. Standardisation and PCA are fitted on
            the rows the classifier is fitted on.
    """
    from transfersel.metrics.linear import fit_logistic, standardised_pca
    from transfersel.probe import accuracy, split_validation

    if not train_features or len(train_features) != len(test_features):
        raise InputError(
            f"{len(train_features)} train and {len(test_features)} test feature sets; "
            "give one of each per model"
        )
    classes, y_train = np.unique(np.asarray(train_labels), return_inverse=True)
    test_labels = np.asarray(test_labels)
    unseen = np.setdiff1d(test_labels, classes)
    if unseen.size:
        raise InputError(f"test labels {unseen[:5].tolist()} never occur in train; use splits of one dataset")
    y_test = np.searchsorted(classes, test_labels)

    def probe_scores(fit: Sequence[np.ndarray], evaluated: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        Z_fit, Z_eval = [], []
        for X, E in zip(fit, evaluated, strict=True):
            mu, W = standardised_pca(X, min(n_components, X.shape[1]))
            Z_fit.append((X - mu) @ W)
            Z_eval.append((E - mu) @ W)
        return np.hstack(Z_fit), np.hstack(Z_eval)

    def probe(
        Z_fit: np.ndarray, y_fit: np.ndarray, Z_eval: np.ndarray, y_eval: np.ndarray, C: float
    ) -> float:
        W, b = fit_logistic(Z_fit, y_fit, classes.size, C)
        return accuracy((Z_eval @ W + b).argmax(axis=1), y_eval)[0]

    X_train = [np.asarray(X, dtype=np.float64) for X in train_features]
    fit_rows, val_rows = split_validation(y_train, val_fraction, seed)
    Z_fit, Z_val = probe_scores([X[fit_rows] for X in X_train], [X[val_rows] for X in X_train])
    val = [probe(Z_fit, y_train[fit_rows], Z_val, y_train[val_rows], C) for C in sorted(Cs)]
    best_C = sorted(Cs)[int(np.argmax(val))]
    Z_train, Z_test = probe_scores(X_train, [np.asarray(X, dtype=np.float64) for X in test_features])
    return probe(Z_train, y_train, Z_test, y_test, best_C)
