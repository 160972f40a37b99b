"""``rank --confidence``: how sure a leaderboard's answer is (spec selection.md §5, last bullet).

The ranking metric (a leaderboard's first) is rescored on ``draws`` resamples of the target samples through
the same loop as the full run (:func:`transfersel.scoring.score_models`: a pool metric such as ``auto``,
NCTI or ETran is combined over the models within each draw). From the draws every model gets a score
interval, the share of draws in which it ranks first (``p_top``), and whether it can be separated from the
top model; the result is a :class:`transfersel.results.Confidence`.

**Resampling without replacement.** Draw b keeps ``floor(fraction · n_c)`` samples of every class c (default
80 %), the first of the class in :func:`transfersel.metrics.stratified_permutation` seeded with
``(seed, b)``: draws are reproducible, independent of each other, and the same rows for every model (paired).
A with-replacement bootstrap would duplicate rows: a duplicate is its own nearest neighbour (inflating kNN's
leave-one-out and the linear probe's cross-validated accuracy) and lowers the rank of the Gaussian metrics'
covariances. A draw keeps at least :data:`MIN_PER_CLASS` samples of every class; a class with fewer is
refused with the fix.

**Spread.** A draw of ``k = f·N`` samples without replacement scatters a √N-consistent score around the
full-data one with variance ``(1/k − 1/N)·σ² = ((1 − f)/f)·σ²/N``: at f = 0.8, half the full-data standard
deviation. Each model's draw scores are therefore centred on their mean (which also removes a metric's
small-sample bias, e.g. kNN with fewer neighbours) and stretched around its full-data score ``s`` by
``sqrt(f / (1 − f))`` (2 at f = 0.8): ``s̃_b = s + sqrt(f/(1 − f))·(s_b − mean_b s_b)`` (subsampling with the
finite-population correction; Politis, Romano & Wolf, *Subsampling*, 1999). Paired differences between
models keep their covariance, since every model is scored on the same draws.

**Read-outs** per model, from the stretched draws:

* interval: the 5th–95th percentile;
* ``p_top``: the share of draws in which it ranks first; tied first places (ties as
  :func:`transfersel.regimes.tie_ranks`) split the draw, so the shares sum to 1 over the models;
* within noise of the top (rank 1 of the full-data scores, exactly one model): it beats or ties the top in
  at least ``noise_share`` (10 %) of the paired draws, i.e. the top is not ahead in 90 % of them (a one-sided
  paired comparison at 90 %). The top is within noise of itself.

**Cost**: ``draws`` rescorings of the ranking metric, about ``draws``× the scoring (``auto`` is a consensus of
several metrics), so ``--confidence`` is opt-in (the spec makes it the default only under 2×). **Memory**: a
draw gathers one model's kept rows at a time; the caller's arrays are never written or copied whole.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from transfersel.errors import InputError
from transfersel.features import ModelFeatures
from transfersel.metrics import stratified_permutation
from transfersel.progress import StepProgress
from transfersel.regimes import tie_ranks
from transfersel.results import Confidence, Leaderboard
from transfersel.scoring import score_models

__all__ = [
    "DRAWS",
    "FRACTION",
    "MIN_PER_CLASS",
    "NOISE_SHARE",
    "Resampling",
    "check_pool",
    "check_resampling",
    "draw_rows",
    "resample",
    "resolve_confidence",
    "summarise",
]

DRAWS = 20
"""Resamples of ``rank --confidence`` unless ``--draws`` says otherwise."""
FRACTION = 0.8
"""The share of each class a draw keeps (without replacement)."""
NOISE_SHARE = 0.1
"""A model is within noise of the top one when it beats or ties it in at least this share of the draws."""
MIN_PER_CLASS = 2
"""The fewest samples of a class a draw may keep (kNN's leave-one-out and a within-class scatter need 2)."""
LEVEL = (5.0, 95.0)
"""The percentiles of the stretched draw scores that bound a model's interval."""


@dataclass(frozen=True)
class Resampling:
    """How ``rank --confidence`` resamples: ``draws`` subsamples of ``fraction`` of each class, without
    replacement, draw b seeded with ``(seed, b)`` (None: :func:`transfersel.rank.rank`'s ``seed``), and the
    ``noise_share`` of the draws in which a model must beat or tie the top one to be within noise.

    Raises:
        InputError: draws < 2, a fraction outside (0, 1), a negative seed or a share outside (0, 1].
    """

    draws: int = DRAWS
    fraction: float = FRACTION
    seed: int | None = None
    noise_share: float = NOISE_SHARE

    def __post_init__(self) -> None:
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 2:
            raise InputError(
                f"--draws must be an integer >= 2 (resamples to rescore; e.g. --draws {DRAWS}), "
                f"got {self.draws!r}"
            )
        if not 0.0 < float(self.fraction) < 1.0:
            raise InputError(
                f"the confidence fraction must lie strictly between 0 and 1 (the share of each class a draw "
                f"keeps; e.g. {FRACTION}), got {self.fraction!r}"
            )
        if self.seed is not None and (isinstance(self.seed, bool) or int(self.seed) < 0):
            raise InputError(f"the confidence seed must be an integer >= 0, got {self.seed!r}")
        if not 0.0 < float(self.noise_share) <= 1.0:
            raise InputError(f"noise_share must lie in (0, 1] (e.g. {NOISE_SHARE}), got {self.noise_share!r}")


def resolve_confidence(confidence: bool | Resampling | None, seed: int) -> Resampling | None:
    """``rank(confidence=...)``: False/None → None, True → the defaults, a :class:`Resampling` as given;
    a resampling without a seed takes ``seed``."""
    if confidence is None or confidence is False:
        return None
    if confidence is True:
        return Resampling(seed=seed)
    if not isinstance(confidence, Resampling):
        raise InputError(
            f"confidence must be True, False or a transfersel.confidence.Resampling, got {confidence!r}"
        )
    return confidence if confidence.seed is not None else replace(confidence, seed=seed)


def _kept(fraction: float, n: int) -> int:
    """How many of a class's ``n`` samples a draw keeps: ``floor(fraction · n)`` (exact for 0.8 · 10)."""
    return math.floor(fraction * n + 1e-9)


def check_pool(models: Sequence[str]) -> None:
    """Refuse ``--confidence`` on a pool of fewer than two models (nothing to compare) with the fix."""
    if len(set(models)) < 2:
        raise InputError(
            f"--confidence compares models over resamples, and the pool has one model "
            f"({', '.join(dict.fromkeys(models)) or 'none'}); rank two or more models, or drop --confidence"
        )


def check_resampling(feats: Sequence[ModelFeatures], resampling: Resampling) -> np.ndarray:
    """The (N,) labels every model shares, after refusing what ``--confidence`` cannot resample: a pool of
    one model, models extracted on different samples, a class too small to keep :data:`MIN_PER_CLASS`.

    Raises:
        InputError: one line naming the problem and the fix.
    """
    check_pool([f.model for f in feats])
    y = np.asarray(feats[0].labels).reshape(-1)
    for f in feats[1:]:
        if not np.array_equal(np.asarray(f.labels).reshape(-1), y):
            raise InputError(
                f"--confidence resamples the same samples for every model, but {f.model} and "
                f"{feats[0].model} were extracted on different samples; re-extract both, or drop --confidence"
            )
    values, counts = np.unique(y, return_counts=True)
    small = [(v, int(n)) for v, n in zip(values.tolist(), counts, strict=True)]
    small = [(v, n) for v, n in small if _kept(resampling.fraction, n) < MIN_PER_CLASS]
    if small:
        need = next(n for n in range(MIN_PER_CLASS, 10**6) if _kept(resampling.fraction, n) >= MIN_PER_CLASS)
        which = ", ".join(f"{v!r} ({n} sample{'s' * (n != 1)})" for v, n in small[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        raise InputError(
            f"--confidence cannot subsample class {which}{more}: a draw keeps {resampling.fraction:.0%} of "
            f"each class and needs >= {MIN_PER_CLASS} per class; give every class >= {need} samples (raise "
            "--max-per-class, or label more), or drop --confidence"
        )
    return y


def draw_rows(labels: np.ndarray, resampling: Resampling) -> list[np.ndarray]:
    """Per draw b, the ascending (k,) int64 row indices it keeps: the first ``floor(fraction · n_c)`` rows
    of every class c in ``stratified_permutation(labels, (seed, b))``; ``labels`` (N,) any values."""
    y = np.asarray(labels).reshape(-1)
    _, code, counts = np.unique(y, return_inverse=True, return_counts=True)
    code = code.reshape(-1)
    keep = np.array([_kept(resampling.fraction, int(n)) for n in counts])
    seed = 0 if resampling.seed is None else int(resampling.seed)
    out = []
    for b in range(resampling.draws):
        order = stratified_permutation(y, (seed, b))
        c = code[order]  # grouped by class: a class's rows are contiguous
        _, first = np.unique(c, return_index=True)  # where each class (0..C-1) starts
        pos = np.arange(len(y)) - first[c]
        out.append(np.sort(order[pos < keep[c]]).astype(np.int64))
    return out


class _DrawFeatures(Sequence[ModelFeatures]):
    """The models' features on one draw's rows, each gathered only when the scoring loop reaches it."""

    def __init__(self, feats: Sequence[ModelFeatures], rows: np.ndarray) -> None:
        self._feats, self._rows = feats, rows

    def __len__(self) -> int:
        return len(self._feats)

    def __getitem__(self, i: int) -> ModelFeatures:  # type: ignore[override]
        mf, rows = self._feats[i], self._rows
        logits = None if mf.logits is None else np.asarray(mf.logits)[rows]
        return ModelFeatures(mf.model, np.asarray(mf.features)[rows], np.asarray(mf.labels)[rows], logits)


def resample(
    board: Leaderboard,
    feats: Sequence[ModelFeatures],
    resampling: Resampling,
    *,
    device: str | None = "cpu",
    label_embeddings: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    reduce: int | str | None = None,
    priors: Mapping[str, Mapping[str, float]] | None = None,
    progress: bool = False,
) -> Confidence:
    """Rescore ``board``'s ranking metric (its first, with its options) on every draw of ``resampling``
    and summarise the draws (:func:`summarise`) against the full-data scores and top model of ``board``.

    ``feats`` are the models ``board`` scored (in zoo order, N rows each); ``label_embeddings`` (K, C, D2),
    per-sample ``targets`` (K, N, D2, indexed per draw), ``reduce`` and ``priors`` are what the full run got.
    Metric warnings of the draws are not repeated (the full run gave them once); a model's NaN draws are
    counted in ``nan_draws`` and left out of its interval.
    """
    labels = check_resampling(feats, resampling)
    metric, models = board.metrics[0], [f.model for f in feats]
    scores = np.full((resampling.draws, len(models)), math.nan)
    with warnings.catch_warnings(), StepProgress(progress, "confidence") as bar:
        warnings.simplefilter("ignore")
        bar.start(resampling.draws)
        for b, rows in enumerate(draw_rows(labels, resampling)):
            bar.describe(f"confidence: {metric} on draw {b + 1} of {resampling.draws}")
            scored = score_models(
                _DrawFeatures(feats, rows),
                [metric],
                device=device,
                options=board.options,
                notes=[],
                label_embeddings=label_embeddings,
                targets=None if targets is None else targets[:, rows],
                reduce=reduce,
                priors=priors,
            )
            scores[b] = [scored.scores[metric][m] for m in models]
            bar.advance()
    full = {r.model: r.scores[metric] for r in board.rows}
    return summarise(metric, models, [full[m] for m in models], board.rows[0].model, scores, resampling)


def summarise(
    metric: str,
    models: Sequence[str],
    full: Sequence[float],
    top: str,
    scores: np.ndarray,
    resampling: Resampling,
) -> Confidence:
    """The :class:`Confidence` of (draws, M) draw ``scores`` (NaN: not scored) of ``models`` whose full-data
    scores are ``full`` (M,) and whose rank-1 model is ``top``; the rules are the module docstring's."""
    scores = np.asarray(scores, dtype=np.float64)
    f = float(resampling.fraction)
    stretch = math.sqrt(f / (1.0 - f))
    finite = np.isfinite(scores)
    n_ok = finite.sum(axis=0)
    centre = np.where(finite, scores, 0.0).sum(axis=0) / np.maximum(n_ok, 1)
    S = np.asarray(full, dtype=np.float64) + stretch * (scores - centre)  # NaN stays NaN
    ok = np.isfinite(S)
    credit, scored_draws = np.zeros(len(models)), 0
    for b in range(len(S)):
        if ok[b].any():
            first = (np.array(tie_ranks(S[b])) == 1) & ok[b]
            credit[first] += 1.0 / first.sum()
            scored_draws += 1
    t = list(models).index(top)
    lo, hi, within = {}, {}, {}
    for j, m in enumerate(models):
        mine = S[ok[:, j], j]
        lo[m], hi[m] = (float(v) for v in np.percentile(mine, LEVEL)) if len(mine) else (math.nan, math.nan)
        paired = np.flatnonzero(ok[:, j] & ok[:, t])
        wins = sum(tie_ranks([S[b, j], S[b, t]])[0] == 1 for b in paired)
        need = math.ceil(resampling.noise_share * len(paired) - 1e-9)
        within[m] = j == t or (len(paired) > 0 and wins >= need)
    return Confidence(
        metric=metric,
        top=top,
        draws=resampling.draws,
        fraction=f,
        seed=0 if resampling.seed is None else int(resampling.seed),
        noise_share=float(resampling.noise_share),
        stretch=stretch,
        lo=lo,
        hi=hi,
        p_top={m: float(credit[j] / scored_draws) if scored_draws else 0.0 for j, m in enumerate(models)},
        within_noise={m: bool(w) for m, w in within.items()},
        nan_draws={m: int(len(S) - n_ok[j]) for j, m in enumerate(models)},
        draw_scores={m: tuple(float(v) for v in scores[:, j]) for j, m in enumerate(models)},
        level=LEVEL,
    )
