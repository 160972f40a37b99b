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

__all__ = ["EnsembleResult", "Evaluation", "Leaderboard", "Row", "correlation_table"]


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

    @property
    def models(self) -> list[str]:
        return [r.model for r in self.rows]

    def __str__(self) -> str:
        return render(self.table())

    def table(self, *, seconds: bool = False, dims: bool = False, baselines: bool = True) -> Table:
        """model, then per metric: score (zoo-normalised if ``normalise``), rank (and seconds if ``seconds``,
        the scored dimension ``{metric}_d`` of a reducible metric if ``dims``); then the ground-truth accuracy
        when given. ``baselines=False`` leaves out the ``prior_*`` columns (the compact console view)."""
        shown = [m for m in self.metrics if baselines or not m.startswith("prior_")]
        columns = ["model"]
        for m in shown:
            columns += [f"{m}_norm" if self.normalise else m, f"{m}_rank"] + ([f"{m}_s"] if seconds else [])
            columns += [f"{m}_d"] if dims and m in self.dims else []
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
            if gt:
                row.append(r.accuracy)
            rows.append(tuple(row))
        title = f"{self.dataset}: ranked by {self.metrics[0]}" + (
            " (zoo-normalised)" if self.normalise else ""
        )
        if self.reduce is not None and self.dims:  # only when a ranked metric is reducible
            title += f", reduce {self.reduce}"
        return Table(tuple(columns), tuple(rows), title, (*self.refused, *self.notes))

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
