"""What ``rank``, ``evaluate`` and ``ensemble`` return: plain dataclasses whose ``table()`` is a
:class:`transfersel.report.Table` that the CLI renders and writes.

Ranks: 1 is best; tied scores share a rank; NaN scores (the metric could not score that model) rank last and
are listed in the notes, and models whose input or a metric failed are in ``failures``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from transfersel.agreement import Correlation, TauTable
from transfersel.report import Table, render

if TYPE_CHECKING:
    from transfersel.ensemble import Ensemble

__all__ = ["Confidence", "EnsembleResult", "Evaluation", "Leaderboard", "Row", "correlation_table"]


@dataclass(frozen=True)
class Row:
    """One model in a leaderboard: per metric its score, rank (1 = best), seconds and zoo-normalised score."""

    model: str
    scores: dict[str, float]
    ranks: dict[str, int]
    seconds: dict[str, float]
    normalised: dict[str, float]
    accuracy: float | None = None


@dataclass(frozen=True)
class Confidence:
    """How sure a leaderboard's ranking is (``rank --confidence``, :mod:`transfersel.confidence`).

    The ranking ``metric`` was rescored on ``draws`` class-stratified subsamples without replacement of
    ``fraction`` of each class (draw b seeded with ``(seed, b)``). Per model (dicts keyed by model):
    ``lo``/``hi`` the ``level`` percentiles of its draw scores stretched to the full-data sampling spread,
    ``p_top`` the share of draws in which it ranks first (a tie splits the draw; the shares sum to 1),
    ``within_noise`` whether it beats or ties ``top`` (rank 1 on the full data) in at least ``noise_share``
    of the paired draws (True for ``top`` itself), ``nan_draws`` how many draws it could not be scored on
    and ``draw_scores`` its raw (unstretched) score in each draw, (draws,).
    """

    metric: str
    top: str
    draws: int
    fraction: float
    seed: int
    noise_share: float
    stretch: float
    lo: dict[str, float]
    hi: dict[str, float]
    p_top: dict[str, float]
    within_noise: dict[str, bool]
    nan_draws: dict[str, int]
    draw_scores: dict[str, tuple[float, ...]]
    level: tuple[float, float] = (5.0, 95.0)

    @property
    def tied(self) -> list[str]:
        """The models that cannot be separated from the top one, the top first."""
        return [self.top, *(m for m, w in self.within_noise.items() if w and m != self.top)]

    def cells(self, model: str, *, full: bool) -> list[Any]:
        """``[lo, hi, p_top, within_noise]`` (files), or ``[p(top), "≈" | ""]`` (the compact console view,
        where ``≈`` marks a model other than the top that cannot be separated from it)."""
        if full:
            return [self.lo[model], self.hi[model], self.p_top[model], self.within_noise[model]]
        return [self.p_top[model], "≈" if self.within_noise[model] and model != self.top else ""]

    def note(self) -> str:
        """One line: what was resampled, the rule behind ``≈``, and what to do when several models tie."""
        lo, hi = (f"{q:g}" for q in self.level)
        line = (
            f"confidence: {self.metric} rescored on {self.draws} draws of {self.fraction:.0%} of each class "
            f"(without replacement, seed {self.seed}; interval: {lo}th-{hi}th percentile, spread "
            f"x{self.stretch:.3g} to the full-data size); ≈: beats or ties {self.top} in >= "
            f"{self.noise_share:.0%} of the draws"
        )
        tied = self.tied
        if len(tied) > 1:
            every = "both" if len(tied) == 2 else f"all {len(tied)}"
            return line + f"; {len(tied)} models within noise: fine-tune {every}, or label more data"
        return line + f"; {self.top} is ahead of every other model"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the settings and, per model, the interval, p_top, within_noise and the draw scores."""
        return {
            "metric": self.metric,
            "top": self.top,
            "draws": self.draws,
            "fraction": self.fraction,
            "seed": self.seed,
            "noise_share": self.noise_share,
            "stretch": self.stretch,
            "level": list(self.level),
            "models": {
                m: {
                    "lo": self.lo[m],
                    "hi": self.hi[m],
                    "p_top": self.p_top[m],
                    "within_noise": self.within_noise[m],
                    "nan_draws": self.nan_draws[m],
                    "draw_scores": list(self.draw_scores[m]),
                }
                for m in self.lo
            },
        }


@dataclass(frozen=True)
class Leaderboard:
    """Models of one dataset ranked by the first metric, with correlations when a ground truth was given."""

    dataset: str
    metrics: tuple[str, ...]
    rows: tuple[Row, ...]
    correlations: tuple[Correlation, ...] = ()
    notes: tuple[str, ...] = ()
    normalise: bool = False
    refused: tuple[str, ...] = ()  # one line per metric asked for by name that could not run
    reduce: str | None = None  # the --reduce setting ("auto", "none", "d"); None: scores read from a file
    dims: dict[str, dict[str, int]] = field(default_factory=dict)  # reducible metric -> model -> scored d
    failures: dict[str, str] = field(default_factory=dict)  # model -> why its input or a metric failed
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-metric options in effect
    confidence: Confidence | None = None  # rank --confidence: intervals, p(top), within noise of the top

    @property
    def models(self) -> list[str]:
        return [r.model for r in self.rows]

    def __str__(self) -> str:
        return render(self.table())

    def table(
        self, *, seconds: bool = False, dims: bool = False, baselines: bool = True, intervals: bool = False
    ) -> Table:
        """model, then per metric: score (zoo-normalised if ``normalise``), rank (and seconds if ``seconds``,
        the scored dimension ``{metric}_d`` of a reducible metric if ``dims``); then the ground-truth accuracy
        when given. ``baselines=False`` leaves out the ``prior_*`` columns (the compact console view).

        With :attr:`confidence`, the ranking metric's columns are followed by ``p(top)`` and ``≈`` (the
        compact view), or with ``intervals`` by ``{metric}_lo``, ``{metric}_hi`` (of the raw score),
        ``p_top`` and ``within_noise`` (the written files); its :meth:`Confidence.note` ends the notes."""
        shown = [m for m in self.metrics if baselines or not m.startswith("prior_")]
        c = self.confidence
        columns = ["model"]
        for m in shown:
            columns += [f"{m}_norm" if self.normalise else m, f"{m}_rank"] + ([f"{m}_s"] if seconds else [])
            columns += [f"{m}_d"] if dims and m in self.dims else []
            if c is not None and m == self.metrics[0]:
                columns += [f"{m}_lo", f"{m}_hi", "p_top", "within_noise"] if intervals else ["p(top)", "≈"]
        gt = any(r.accuracy is not None for r in self.rows)
        if gt:
            columns.append("accuracy")
        rows = []
        for r in self.rows:
            row: list[Any] = [r.model]
            for m in shown:
                row += [r.normalised[m] if self.normalise else r.scores[m], r.ranks[m]]
                row += [round(r.seconds[m], 4)] if seconds else []
                row += [self.dims[m].get(r.model)] if dims and m in self.dims else []
                row += c.cells(r.model, full=intervals) if c is not None and m == self.metrics[0] else []
            if gt:
                row.append(r.accuracy)
            rows.append(tuple(row))
        title = f"{self.dataset}: ranked by {self.metrics[0]}" + (
            " (zoo-normalised)" if self.normalise else ""
        )
        if self.reduce is not None and self.dims:  # only when a ranked metric is reducible
            title += f", reduce {self.reduce}"
        notes = (*self.refused, *self.notes, *([c.note()] if c is not None else []))
        return Table(tuple(columns), tuple(rows), title, notes)

    def correlation_table(self) -> Table:
        """Per metric: τ_w, Kendall τ, Spearman ρ, Pearson r, rel@1/3, regret@1/3, bootstrap sd of τ_w."""
        return correlation_table(self.correlations, title=f"{self.dataset}: agreement with the ground truth")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready extra content: the settings (reduce, metric options, scored dimensions), the raw and
        normalised scores, the failures and the correlations."""
        return {
            "dataset": self.dataset,
            "metrics": list(self.metrics),
            "reduce": self.reduce,
            "dims": self.dims,
            "options": self.options,
            "failures": self.failures,
            "scores": {r.model: r.scores for r in self.rows},
            "normalised": {r.model: r.normalised for r in self.rows},
            "correlations": [vars(c) for c in self.correlations],
            **({"confidence": self.confidence.to_dict()} if self.confidence is not None else {}),
        }


def correlation_table(rows: Sequence[Correlation], *, title: str = "") -> Table:
    """One row per (dataset, metric) with every statistic of spec §5.1–5.2."""
    columns = (
        "dataset",
        "metric",
        "tau_w",
        "tau_w_sd",
        "kendall_tau",
        "spearman",
        "pearson",
        "rel@1",
        "rel@3",
        "regret@1",
        "regret@3",
        "top1",
        "best",
    )
    out = [
        (
            c.dataset,
            c.metric,
            c.weighted_tau,
            c.tau_sd,
            c.kendall_tau,
            c.spearman,
            c.pearson,
            c.rel_at_1,
            c.rel_at_3,
            c.regret_at_1,
            c.regret_at_3,
            c.top1,
            c.best,
        )
        for c in rows
    ]
    notes = [f"{c.dataset}/{c.metric}: tied scores (zoo order used): {ties}" for c in rows for ties in c.ties]
    return Table(columns, tuple(out), title, tuple(notes))


@dataclass(frozen=True)
class Evaluation:
    """Metrics × datasets agreement with the ground truth (the papers' τ_w table) and every statistic."""

    leaderboards: tuple[Leaderboard, ...]
    correlations: tuple[Correlation, ...]
    tau: TauTable
    notes: tuple[str, ...] = field(default=())
    refused: tuple[str, ...] = ()  # one line per metric asked for by name that could not run
    failures: dict[str, str] = field(default_factory=dict)  # "dataset/model" -> why it got NaN

    def __str__(self) -> str:
        return render(self.table())

    def table(self) -> Table:
        """One row per metric, one column per dataset, then the average over datasets (weighted τ)."""
        t = self.tau
        rows = tuple((m, *(t.values[m][d] for d in t.datasets), t.average[m]) for m in t.metrics)
        return Table(
            ("metric", *t.datasets, "avg"),
            rows,
            "weighted Kendall τ_w (scipy.stats.weightedtau); avg = mean over datasets",
            self.notes,
        )

    def correlation_table(self) -> Table:
        return correlation_table(self.correlations, title="all statistics")


@dataclass(frozen=True)
class EnsembleResult:
    """The selected ensemble, the leaderboard it came from, and the ground-truth accuracies if given."""

    ensemble: Ensemble
    leaderboard: Leaderboard

    def __str__(self) -> str:
        return render(self.table())

    def table(self) -> Table:
        """Pick order: model, score, t, g, objective (+ accuracy) next to the top-k by score alone."""
        acc = {r.model: r.accuracy for r in self.leaderboard.rows}
        gt = any(a is not None for a in acc.values())
        e = self.ensemble
        columns = ["#", "selected", "score", "t", "g", "objective"] + (["accuracy"] if gt else [])
        columns += ["top_k_by_score"] + (["top_k_accuracy"] if gt else [])
        rows = []
        for i, (p, other) in enumerate(zip(e.picks, e.top_k_by_score, strict=True), 1):
            row: list[Any] = [i, p.model, p.score, p.t, p.g, p.objective] + ([acc[p.model]] if gt else [])
            row += [other] + ([acc[other]] if gt else [])
            rows.append(tuple(row))
        title = (
            f"{self.leaderboard.dataset}: {e.k} models by {e.metric} + {e.complementarity} complementarity "
            f"({e.mode}, r={e.r})"
        )
        notes = list(self.leaderboard.notes)
        if e.excluded:
            notes.append(f"excluded (NaN score): {', '.join(e.excluded)}")
        if e.mode == "sfda-oneshot":
            notes.append("sfda-oneshot is our reading of the SFDA paper's Eq. 8-9 (unverified); g is ĉ")
        return Table(tuple(columns), tuple(rows), title, tuple(notes))
