"""How well do transferability scores predict fine-tuned accuracy? (spec §5, the papers' protocol).

Pure functions on arrays, plus the ground-truth CSV reader. Per dataset, for models with scores ``s`` and
fine-tuned accuracies ``a`` (both ``(M,)``, aligned by model):

* weighted Kendall τ_w = ``scipy.stats.weightedtau(s, a)`` with its defaults (hyperbolic weigher, additive
  pair weights, ``rank=True``), exactly SFDA ``rank_correlation.py::w_kendall_metric``; Kendall τ_b,
  Spearman ρ and Pearson r from scipy;
* rel@k = best accuracy among the top-k models by score over the best accuracy overall, regret@k = the gap in
  accuracy points (§5.2); ties in scores are broken by zoo order (stable sort) and reported;
* ties are the leaderboard's (:data:`transfersel.regimes.REL_TIE`): scores within 1e-9 relative are made
  equal before any rank statistic, so a saturated metric's float noise (H-score's C − 1 as 8.99999999999999
  and 9.00000000000003) does not order models;
* stability: the bootstrap standard deviation of τ_w over models (seeded).

NaN scores (a metric that could not score a model) are ranked last, as ``-inf`` (§5.1), and reported in
``nan_models``; Pearson r, which is not a rank statistic, uses only the finite scores.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transfersel.errors import InputError
from transfersel.paths import read_text
from transfersel.regimes import tie_groups, tie_ranks

__all__ = [
    "Correlation",
    "GroundTruth",
    "TauTable",
    "bootstrap_tau_sd",
    "correlate",
    "evaluate_scores",
    "kendall_tau",
    "minmax",
    "pearson",
    "read_ground_truth",
    "read_scores_csv",
    "regret_at_k",
    "rel_at_k",
    "score_ties",
    "spearman",
    "tau_table",
    "top_k",
    "weighted_tau",
]


def _pair(
    scores: Sequence[float], accuracy: Sequence[float], *, ties: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Scores with NaN → -inf (ranked last) and accuracies, as float64 ``(M,)`` arrays of equal length;
    with ``ties`` each group of tied scores (:func:`transfersel.regimes.tie_ranks`) takes its largest
    value."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    a = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    if s.shape != a.shape:
        raise InputError(f"{s.size} scores but {a.size} accuracies; pass one of each per model")
    if s.size < 2:
        raise InputError(f"need at least 2 models to correlate, got {s.size}")
    if not np.isfinite(a).all():
        raise InputError("ground-truth accuracies contain NaN or inf; fix the ground-truth file")
    s = np.where(np.isnan(s), -np.inf, s)
    if ties:
        ranks = tie_ranks(s)
        top: dict[int, float] = {}
        for r, v in zip(ranks, s, strict=True):
            top[r] = max(top.get(r, -math.inf), float(v))
        s = np.array([top[r] for r in ranks])
    return s, a


def weighted_tau(scores: Sequence[float], accuracy: Sequence[float]) -> float:
    """Weighted Kendall τ_w, ``scipy.stats.weightedtau(scores, accuracy)`` with defaults; NaN scores last."""
    from scipy import stats  # scipy.stats takes ~0.4 s to import: only when used

    s, a = _pair(scores, accuracy)
    return float(stats.weightedtau(s, a).statistic)


def kendall_tau(scores: Sequence[float], accuracy: Sequence[float]) -> float:
    """Kendall τ_b (``scipy.stats.kendalltau``); NaN scores last."""
    from scipy import stats

    s, a = _pair(scores, accuracy)
    return float(stats.kendalltau(s, a).statistic)


def spearman(scores: Sequence[float], accuracy: Sequence[float]) -> float:
    """Spearman ρ (``scipy.stats.spearmanr``); NaN scores last; NaN (no warning) when either side is
    constant, e.g. a prior that ties every model (the leaderboard's all-tie note says so once)."""
    from scipy import stats

    s, a = _pair(scores, accuracy)
    if np.ptp(s) == 0 or np.ptp(a) == 0:
        return math.nan
    return float(stats.spearmanr(s, a).statistic)


def pearson(scores: Sequence[float], accuracy: Sequence[float]) -> float:
    """Pearson r (``scipy.stats.pearsonr``) over the models with a finite score; NaN if < 2 or constant."""
    from scipy import stats

    s, a = _pair(scores, accuracy, ties=False)
    ok = np.isfinite(s)
    if ok.sum() < 2 or np.ptp(s[ok]) == 0 or np.ptp(a[ok]) == 0:
        return math.nan
    return float(stats.pearsonr(s[ok], a[ok]).statistic)


def minmax(scores: Sequence[float]) -> np.ndarray:
    """Zoo-relative ``(s − min s)/(max s − min s)`` over the finite scores (NaN stays NaN; all equal → 1).

    NCTI/ETran need scores on this scale; the ensemble uses it as transferability ``t_m`` (spec §6.2).
    """
    s = np.asarray(scores, dtype=np.float64)
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        return np.full_like(s, np.nan)
    lo, hi = finite.min(), finite.max()
    if hi == lo:
        return np.where(np.isfinite(s), 1.0, np.nan)
    return (s - lo) / (hi - lo)


def top_k(scores: Sequence[float], k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties keep zoo order (stable sort), NaN last."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    s = np.where(np.isnan(s), -np.inf, s)
    return np.argsort(-s, kind="stable")[:k]


def rel_at_k(scores: Sequence[float], accuracy: Sequence[float], k: int) -> float:
    """rel@k = max accuracy among the top-k by score / max accuracy overall (SFDA ``rel_k``)."""
    s, a = _pair(scores, accuracy)
    return float(a[top_k(s, k)].max() / a.max())


def regret_at_k(scores: Sequence[float], accuracy: Sequence[float], k: int) -> float:
    """regret@k = max accuracy overall − max accuracy among the top-k by score, in accuracy units."""
    s, a = _pair(scores, accuracy)
    return float(a.max() - a[top_k(s, k)].max())


def score_ties(scores: Sequence[float], names: Sequence[str]) -> list[tuple[str, ...]]:
    """Groups of models whose finite scores tie (:func:`transfersel.regimes.tie_groups`, the leaderboard's
    rule), best group first, each in zoo order; NaN and infinite scores are in none."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return tie_groups(np.where(np.isfinite(s), s, np.nan).tolist(), names)


def bootstrap_sds(
    scores: Sequence[float], accuracy: Sequence[float], *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Standard deviations of ``(τ_w, rel@1, regret@1)`` over ``n_boot`` resamples of the models (with
    replacement, seeded; the same draws for the three).

    A draw's rel@1 and regret@1 compare its top-scored model with its best one. Resamples in which τ_w is
    undefined (every drawn model identical) are skipped for τ_w.
    """
    from scipy import stats

    s, a = _pair(scores, accuracy)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, s.size, size=(n_boot, s.size))
    taus = np.array([stats.weightedtau(s[i], a[i]).statistic for i in draws], dtype=np.float64)
    # the top-scored model of each draw (first on ties, as top_k), and the draw's best accuracy
    picked = a[draws[np.arange(n_boot), np.argmax(s[draws], axis=1)]]
    best = a[draws].max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _sd(taus), _sd(picked / best), _sd(best - picked)


def _sd(values: np.ndarray) -> float:
    """Sample sd of the finite ``values`` (NaN with fewer than two)."""
    v = values[np.isfinite(values)]
    return float(v.std(ddof=1)) if v.size > 1 else math.nan


def bootstrap_tau_sd(
    scores: Sequence[float], accuracy: Sequence[float], *, n_boot: int = 1000, seed: int = 0
) -> float:
    """Standard deviation of τ_w over ``n_boot`` resamples of the models (:func:`bootstrap_sds`)."""
    return bootstrap_sds(scores, accuracy, n_boot=n_boot, seed=seed)[0]


@dataclass(frozen=True)
class Correlation:
    """How one metric's scores on one dataset agree with the ground truth (one row of the evaluation).

    ``regret_at_*`` are in the ground truth's accuracy units (points when it is in %).
    ``nan_models`` could not be scored and were ranked last; ``ties`` lists groups of models with equal
    scores, each in zoo order (the order used to break them).
    """

    dataset: str
    metric: str
    n_models: int
    weighted_tau: float
    kendall_tau: float
    spearman: float
    pearson: float
    rel_at_1: float
    rel_at_3: float
    regret_at_1: float
    regret_at_3: float
    tau_sd: float
    top1: str
    best: str
    nan_models: tuple[str, ...] = ()
    ties: tuple[tuple[str, ...], ...] = ()
    rel_at_1_sd: float = math.nan
    regret_at_1_sd: float = math.nan


def correlate(
    dataset: str,
    metric: str,
    names: Sequence[str],
    scores: Sequence[float],
    accuracy: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> Correlation:
    """Every statistic of §5.1–5.2 for one (dataset, metric); ``names``, ``scores``, ``accuracy`` aligned."""
    s, a = _pair(scores, accuracy)
    if len(names) != s.size:
        raise InputError(f"{len(names)} model names but {s.size} scores; pass one name per model")
    tau_sd, rel_sd, regret_sd = bootstrap_sds(s, a, n_boot=n_boot, seed=seed)
    return Correlation(
        dataset=dataset,
        metric=metric,
        n_models=s.size,
        weighted_tau=weighted_tau(s, a),
        kendall_tau=kendall_tau(s, a),
        spearman=spearman(s, a),
        pearson=pearson(scores, a),  # not a rank statistic: the scores as given
        rel_at_1=rel_at_k(s, a, 1),
        rel_at_3=rel_at_k(s, a, 3),
        regret_at_1=regret_at_k(s, a, 1),
        regret_at_3=regret_at_k(s, a, 3),
        tau_sd=tau_sd,
        top1=names[int(top_k(s, 1)[0])],
        best=names[int(np.argmax(a))],
        nan_models=tuple(n for n, v in zip(names, s, strict=True) if v == -np.inf),
        ties=tuple(score_ties(s, names)),
        rel_at_1_sd=rel_sd,
        regret_at_1_sd=regret_sd,
    )


@dataclass(frozen=True)
class TauTable:
    """The papers' table: one row per metric, one column per dataset, plus the average over datasets.

    ``values[metric][dataset]`` is the statistic (NaN where it was not computed); ``average[metric]`` is the
    mean over the datasets where it is finite.
    """

    statistic: str
    metrics: tuple[str, ...]
    datasets: tuple[str, ...]
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    average: dict[str, float] = field(default_factory=dict)


def tau_table(rows: Sequence[Correlation], *, statistic: str = "weighted_tau") -> TauTable:
    """Pivot :class:`Correlation` rows into a metrics × datasets table of ``statistic`` with averages.

    Metrics and datasets keep their order of first appearance in ``rows``.
    """
    metrics = tuple(dict.fromkeys(r.metric for r in rows))
    datasets = tuple(dict.fromkeys(r.dataset for r in rows))
    values = {m: dict.fromkeys(datasets, math.nan) for m in metrics}
    for r in rows:
        values[r.metric][r.dataset] = float(getattr(r, statistic))
    average = {}
    for m in metrics:
        finite = [v for v in values[m].values() if math.isfinite(v)]
        average[m] = float(np.mean(finite)) if finite else math.nan
    return TauTable(statistic, metrics, datasets, values, average)


# ----------------------------------------------------------------------------------------------------------
# Ground truth


@dataclass(frozen=True)
class GroundTruth:
    """Fine-tuned accuracies, ``accuracy[dataset][model]``, read from a ``dataset,model,accuracy`` CSV."""

    accuracy: dict[str, dict[str, float]]
    source: str = ""

    @property
    def datasets(self) -> list[str]:
        return list(self.accuracy)

    def check_covers(self, dataset: str, models: Sequence[str]) -> None:
        """Raise :class:`InputError` unless the ground truth has ``dataset`` and an accuracy for every one of
        ``models`` (it may hold more models: ranking a subset of them is fine)."""
        if dataset not in self.accuracy:
            raise InputError(
                f"dataset {dataset!r} is not in the ground truth {self.source}; it has: "
                f"{', '.join(self.accuracy)}. Name the data folder like the ground truth's dataset column"
            )
        missing = [m for m in models if m not in self.accuracy[dataset]]
        if missing:
            raise InputError(
                f"the ground truth {self.source} has no accuracy on {dataset!r} for: {', '.join(missing)}; "
                "add them to it, or leave them out with --model"
            )

    def for_models(self, dataset: str, models: Sequence[str]) -> np.ndarray:
        """Accuracies of ``models`` on ``dataset``, aligned with ``models`` (see :meth:`check_covers`)."""
        self.check_covers(dataset, models)
        known = self.accuracy[dataset]
        return np.array([known[m] for m in models], dtype=np.float64)


def _read_comment_csv(path: Path, required: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV whose leading ``#`` lines are comments, with their line numbers; checks the header."""
    text = read_text(path, what, f"a CSV with the header {','.join(required)}")
    lines = [
        (i, line)
        for i, line in enumerate(io.StringIO(text, newline=""), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise InputError(f"{what} file {path} is empty; it needs a header {','.join(required)} and rows")
    reader = csv.DictReader(line for _, line in lines)
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    absent = [c for c in required if c not in header]
    if absent:
        raise InputError(
            f"{what} file {path} lacks column(s) {', '.join(absent)} (header: {','.join(header)}); "
            f"its header must be {','.join(required)}"
        )
    rows = [(lineno, row) for (lineno, _), row in zip(lines[1:], reader, strict=True)]
    if not rows:
        raise InputError(f"{what} file {path} has a header but no rows; add one row per {','.join(required)}")
    for lineno, row in rows:
        if lacking := [c for c in required if row.get(c) is None]:
            raise InputError(
                f"{path}:{lineno}: the row has no value for {', '.join(lacking)}; fill in every column of "
                f"{','.join(header)}"
            )
    return rows


def read_ground_truth(path: str | Path) -> GroundTruth:
    """Read a ``dataset,model,accuracy`` CSV (the format of ``shared/benchmarks/published/``).

    Lines starting with ``#`` are comments; extra columns are ignored. Raises :class:`InputError` for a
    missing file or column, a non-numeric accuracy, or a repeated (dataset, model) pair, naming the line.
    """
    accuracy: dict[str, dict[str, float]] = {}
    for lineno, row in _read_comment_csv(Path(path), ("dataset", "model", "accuracy"), "ground-truth"):
        dataset, model = row["dataset"].strip(), row["model"].strip()
        try:
            value = float(row["accuracy"])
        except (TypeError, ValueError):
            raise InputError(
                f"{path}:{lineno}: accuracy {row['accuracy']!r} is not a number; write it as e.g. 91.5"
            ) from None
        if not math.isfinite(value):
            raise InputError(f"{path}:{lineno}: accuracy is {value}; write a finite number")
        if model in accuracy.setdefault(dataset, {}):
            raise InputError(f"{path}:{lineno}: ({dataset}, {model}) appears twice; keep one row per pair")
        accuracy[dataset][model] = value
    return GroundTruth(accuracy, source=str(path))


def read_scores_csv(path: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """Read per-model scores, a ``dataset,model,metric,score`` CSV, as ``[dataset][metric][model]``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for lineno, row in _read_comment_csv(Path(path), ("dataset", "model", "metric", "score"), "scores"):
        try:
            value = float(row["score"])
        except (TypeError, ValueError):
            raise InputError(f"{path}:{lineno}: score {row['score']!r} is not a number") from None
        out.setdefault(row["dataset"].strip(), {}).setdefault(row["metric"].strip(), {})[
            row["model"].strip()
        ] = value
    return out


def evaluate_scores(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]],
    ground_truth: GroundTruth,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[Correlation]:
    """Correlate ``scores[dataset][metric][model]`` with the ground truth: one :class:`Correlation` per pair.

    Models are taken in the order of each metric's mapping (the zoo order); they must match the ground truth's
    models for that dataset exactly.
    """
    rows = []
    for dataset, per_metric in scores.items():
        for metric, per_model in per_metric.items():
            names = list(per_model)
            acc = ground_truth.for_models(dataset, names)
            rows.append(
                correlate(dataset, metric, names, list(per_model.values()), acc, n_boot=n_boot, seed=seed)
            )
    return rows
