"""``rank``, ``evaluate`` and ``select_ensemble``: the Python API behind the CLI commands of the same names.

Each function gets per-model features for a dataset, either from the feature cache (extracting what is
missing: :mod:`transfersel.extract`) or from a directory of precomputed ``{model}_{dataset}_feature.npy`` /
``{model}_{dataset}_label.npy`` files (the paper repos' layout; optional ``_logits.npy``, or ``_output.npy``
as the SFDA repo names the source logits), scores them with metrics from the registry and returns a plain
dataclass whose ``table()`` the CLI renders and writes (:mod:`transfersel.report`).

Ranks: 1 is best; NaN scores (the metric could not score that model) rank last and are listed in the notes;
ties keep zoo order and are noted.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transfersel.errors import InputError, TransferselError
from transfersel.evaluate import (
    Correlation,
    GroundTruth,
    TauTable,
    correlate,
    minmax,
    read_ground_truth,
    read_scores_csv,
    score_ties,
    tau_table,
    top_k,
)
from transfersel.report import ScatterPanel, Table, plot_scatter, plot_scores, write_table

if TYPE_CHECKING:
    from transfersel.ensemble import Ensemble
    from transfersel.targets import LabelTargets

__all__ = [
    "EnsembleResult",
    "Evaluation",
    "Leaderboard",
    "ModelFeatures",
    "Row",
    "evaluate",
    "load_feature_dir",
    "rank",
    "score_models",
    "select_ensemble",
]

PathLike = str | Path


@dataclass(frozen=True)
class ModelFeatures:
    """One model's features on one dataset: (N, D) features, (N,) labels, optional (N, K) source logits."""

    model: str
    features: Any
    labels: Any
    logits: Any = None


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

    @property
    def models(self) -> list[str]:
        return [r.model for r in self.rows]

    def table(self) -> Table:
        """model, then per metric: score (zoo-normalised if ``normalise``), rank, seconds; then accuracy."""
        columns = ["model"]
        for m in self.metrics:
            columns += [f"{m}_norm" if self.normalise else m, f"{m}_rank", f"{m}_s"]
        gt = any(r.accuracy is not None for r in self.rows)
        if gt:
            columns.append("accuracy")
        rows = []
        for r in self.rows:
            row: list[Any] = [r.model]
            for m in self.metrics:
                row += [
                    r.normalised[m] if self.normalise else r.scores[m],
                    r.ranks[m],
                    round(r.seconds[m], 4),
                ]
            if gt:
                row.append(r.accuracy)
            rows.append(tuple(row))
        title = f"{self.dataset}: ranked by {self.metrics[0]}" + (
            " (zoo-normalised)" if self.normalise else ""
        )
        return Table(tuple(columns), tuple(rows), title, self.notes)

    def correlation_table(self) -> Table:
        """Per metric: τ_w, Kendall τ, Spearman ρ, Pearson r, rel@1/3, regret@1/3, bootstrap sd of τ_w."""
        return correlation_table(self.correlations, title=f"{self.dataset}: agreement with the ground truth")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready extra content: the raw and normalised scores and the correlations."""
        return {
            "dataset": self.dataset,
            "metrics": list(self.metrics),
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


# ----------------------------------------------------------------------------------------------------------
# Scoring


def _resolve_metrics(metrics: Iterable[str], notes: list[str], *, embeddings: bool = False) -> list[Any]:
    from transfersel.metrics import get_metric, list_metrics

    metrics = list(metrics)
    if not metrics:
        raise InputError("no metric given; pass --metric NAME (repeatable) or --metric all")
    if "all" in metrics:
        chosen = []
        for m in list_metrics():
            if "label_embeddings" in m.needs and not embeddings:
                notes.append(f"{m.name} skipped: it needs label embeddings; pass --embedder (e.g. minilm)")
            else:
                chosen.append(m)
        return sorted(chosen, key=lambda m: m.name != "sfda")  # rank by SFDA when it is registered
    return [get_metric(m) for m in dict.fromkeys(metrics)]


def _logits_or_none(logits: Any) -> Any:
    """Models without a source classifier store (N, 0) logits or none at all."""
    return None if logits is None or np.asarray(logits).shape[-1] == 0 else logits


def score_models(
    models: Sequence[ModelFeatures],
    metrics: Iterable[str],
    *,
    device: str | None = "cpu",
    options: dict[str, dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    label_embeddings: np.ndarray | None = None,
    targets: np.ndarray | None = None,
) -> tuple[list[str], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Score every model with every metric, sharing one validated input (and its Gram) per model.

    ``metrics`` may contain ``"all"``: every registered metric whose inputs rank can provide. A model a metric
    cannot score (e.g. no source logits for LEEP, or a degenerate input it rejects) gets NaN and a note.
    Metric warnings are re-issued prefixed with the model name. ``label_embeddings`` (K, C, D2) feed EMMS;
    per-sample ``targets`` (K, N, D2) (captions, numbers; :mod:`transfersel.targets`) replace the class labels
    of EMMS and LogME (LogME + F-label).

    Returns:
        ``(metric names, scores[metric][model], seconds[metric][model])``.
    """
    from transfersel.metrics._inputs import check_inputs
    from transfersel.targets import embeddings_for_labels, per_sample_metric

    notes = [] if notes is None else notes
    options = options or {}
    chosen = _resolve_metrics(metrics, notes, embeddings=label_embeddings is not None or targets is not None)
    names = [m.name for m in chosen]
    scores: dict[str, dict[str, float]] = {n: {} for n in names}
    seconds: dict[str, dict[str, float]] = {n: {} for n in names}
    for mf in models:
        logits = _logits_or_none(mf.logits)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            E = None if label_embeddings is None else embeddings_for_labels(label_embeddings, mf.labels)
            inputs = check_inputs(mf.features, mf.labels, logits=logits, label_embeddings=E, device=device)
            for metric in chosen:
                t0 = time.perf_counter()
                if "logits" in metric.needs and logits is None:
                    value = math.nan
                    notes.append(
                        f"{mf.model}: {metric.name} needs source logits, which this model has none of"
                    )
                else:
                    try:
                        opts = options.get(metric.name, {})
                        per_sample = per_sample_metric(metric.name) if targets is not None else None
                        if per_sample is not None:
                            value = per_sample(inputs.X, targets, device=device, **opts)
                        else:
                            value = metric.compute(inputs, **opts)
                    except (TransferselError, np.linalg.LinAlgError) as exc:
                        value = math.nan
                        notes.append(f"{mf.model}: {metric.name} failed ({exc})")
                scores[metric.name][mf.model] = value
                seconds[metric.name][mf.model] = time.perf_counter() - t0
        for w in caught:
            warnings.warn_explicit(f"{mf.model}: {w.message}", w.category, w.filename, w.lineno)
    return names, scores, seconds


def _leaderboard(
    dataset: str,
    names: list[str],
    order: list[str],
    scores: dict[str, dict[str, float]],
    seconds: dict[str, dict[str, float]],
    *,
    ground_truth: GroundTruth | None,
    normalise: bool,
    notes: list[str],
    n_boot: int,
) -> Leaderboard:
    ranks: dict[str, dict[str, int]] = {}
    normalised: dict[str, dict[str, float]] = {}
    for m in names:
        s = [scores[m][model] for model in order]
        ranks[m] = {order[i]: r + 1 for r, i in enumerate(top_k(s, len(s)))}
        normalised[m] = dict(zip(order, map(float, minmax(s)), strict=True))
        nan_models = [model for model, v in zip(order, s, strict=True) if math.isnan(v)]
        if nan_models:
            notes.append(f"{m}: NaN for {', '.join(nan_models)} (ranked last)")
    first = names[0]
    for group in score_ties([scores[first][model] for model in order], order):
        notes.append(f"{first}: tied scores for {', '.join(group)} (ranked in zoo order)")
    accuracy = ground_truth.for_models(dataset, order) if ground_truth else None
    correlations = (
        tuple(
            correlate(dataset, m, order, [scores[m][x] for x in order], accuracy, n_boot=n_boot)
            for m in names
        )
        if accuracy is not None
        else ()
    )
    rows = [
        Row(
            model=model,
            scores={m: scores[m][model] for m in names},
            ranks={m: ranks[m][model] for m in names},
            seconds={m: seconds[m][model] for m in names},
            normalised={m: normalised[m][model] for m in names},
            accuracy=None if accuracy is None else float(accuracy[i]),
        )
        for i, model in enumerate(order)
    ]
    rows.sort(key=lambda r: r.ranks[first])
    return Leaderboard(
        dataset, tuple(names), tuple(rows), correlations, tuple(dict.fromkeys(notes)), normalise
    )


# ----------------------------------------------------------------------------------------------------------
# Getting features


def load_feature_dir(
    directory: PathLike, dataset: str, *, models: Sequence[str] | None = None
) -> list[ModelFeatures]:
    """Precomputed features ``{model}_{dataset}_feature.npy`` + ``_label.npy`` (+ ``_logits``/``_output``).

    ``models`` fixes which models and in what order (default: every model with a feature file, sorted).
    Arrays are memory-mapped, never loaded whole.
    """
    from transfersel.cli import load_array

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"feature directory {directory} does not exist; pass a folder of .npy files")
    suffix = f"_{dataset}_feature.npy"
    found = sorted(p.name[: -len(suffix)] for p in directory.glob(f"*{suffix}"))
    if models is None:
        models = found
    missing = [m for m in models if m not in found]
    if missing or not models:
        raise InputError(
            f"{directory} has no {{model}}{suffix} for {', '.join(missing) or 'any model'}; "
            f"it has features of: {', '.join(found) or 'none'} for dataset {dataset!r}"
        )
    out = []
    for m in models:
        stem = directory / f"{m}_{dataset}"
        logits_path = next(
            (p for p in (Path(f"{stem}_logits.npy"), Path(f"{stem}_output.npy")) if p.is_file()), None
        )
        out.append(
            ModelFeatures(
                m,
                load_array(Path(f"{stem}_feature.npy"), "features"),
                load_array(Path(f"{stem}_label.npy"), "labels"),
                load_array(logits_path, "logits") if logits_path else None,
            )
        )
    return out


def _extract(
    zoo_path: PathLike,
    data: PathLike,
    *,
    only: Sequence[str] | None,
    split: str,
    max_per_class: int | None,
    seed: int,
    cache: PathLike | None,
    device: str,
    notes: list[str],
) -> tuple[str, list[ModelFeatures]]:
    """Features of every zoo model on ``data`` from the cache, extracting the missing ones.

    Models whose extraction failed are left out with a note.
    """
    from transfersel.data import open_dataset
    from transfersel.extract import extract
    from transfersel.store import FeatureStore
    from transfersel.zoo import load_zoo

    zoo = load_zoo(zoo_path, only=list(only) if only else None)
    dataset = open_dataset(data, split=split, max_per_class=max_per_class, seed=seed)
    report = extract(zoo, dataset, store=FeatureStore(cache), device=device)
    for name, why in report.failures.items():
        notes.append(f"{name}: extraction failed ({why}); left out")
    out = [
        ModelFeatures(e.name, cf.features, cf.labels, cf.logits)
        for e in zoo
        if (cf := report.features.get(e.name)) is not None
    ]
    if not out:
        raise InputError(f"no model of {zoo_path} could be extracted on {data}; see the notes above")
    return dataset.name, out


def _features(
    data: PathLike,
    *,
    models: PathLike | None,
    features: PathLike | None,
    ground_truth: GroundTruth | None,
    notes: list[str],
    **extract_options: Any,
) -> tuple[str, list[ModelFeatures]]:
    """(dataset name, per-model features) from a precomputed directory or from the zoo + cache."""
    if features is not None:
        dataset = str(data)
        if models is not None:
            from transfersel.zoo import load_zoo

            order = [e.name for e in load_zoo(models, only=extract_options.get("only"))]
            return dataset, load_feature_dir(features, dataset, models=order)
        feats = load_feature_dir(features, dataset)
        if (
            ground_truth is not None and dataset in ground_truth.accuracy
        ):  # the ground truth's order as zoo order
            listed = list(ground_truth.accuracy[dataset])
            feats.sort(key=lambda f: listed.index(f.model) if f.model in listed else len(listed))
        return dataset, feats
    if models is None:
        raise InputError(
            "pass --models ZOO.yaml (with --data PATH), or --features DIR of precomputed .npy files"
        )
    return _extract(models, data, notes=notes, **extract_options)


def _ground_truth(ground_truth: PathLike | GroundTruth | None) -> GroundTruth | None:
    if ground_truth is None or isinstance(ground_truth, GroundTruth):
        return ground_truth
    return read_ground_truth(ground_truth)


def _outputs(out: PathLike | Sequence[PathLike] | None) -> list[Path]:
    if out is None:
        return []
    return [Path(out)] if isinstance(out, str | Path) else [Path(p) for p in out]


def _rank(
    dataset: str,
    feats: list[ModelFeatures],
    metrics: Sequence[str],
    gt: GroundTruth | None,
    *,
    normalise: bool,
    notes: list[str],
    device: str,
    options: dict[str, dict[str, Any]] | None,
    n_boot: int,
    label_embeddings: np.ndarray | None = None,
    targets: np.ndarray | None = None,
) -> Leaderboard:
    names, scores, seconds = score_models(
        feats,
        metrics,
        device=device,
        options=options,
        notes=notes,
        label_embeddings=label_embeddings,
        targets=targets,
    )
    return _leaderboard(
        dataset,
        names,
        [f.model for f in feats],
        scores,
        seconds,
        ground_truth=gt,
        normalise=normalise,
        notes=notes,
        n_boot=n_boot,
    )


# ----------------------------------------------------------------------------------------------------------
# The three commands


def rank(
    data: PathLike,
    *,
    models: PathLike | None = None,
    metrics: Sequence[str] = ("sfda",),
    ground_truth: PathLike | GroundTruth | None = None,
    features: PathLike | None = None,
    normalise: bool = False,
    out: PathLike | Sequence[PathLike] | None = None,
    plot: PathLike | None = None,
    only: Sequence[str] | None = None,
    split: str = "train",
    max_per_class: int | None = None,
    seed: int = 0,
    cache: PathLike | None = None,
    device: str = "auto",
    options: dict[str, dict[str, Any]] | None = None,
    n_boot: int = 1000,
    label_targets: LabelTargets | None = None,
) -> Leaderboard:
    """Rank the models of a zoo on a dataset by one or more transferability metrics.

    Args:
        data: an ImageFolder dataset (with ``models``), or the dataset name used in the ``features`` files.
        models: zoo YAML; features come from the cache, extracting what is missing.
        metrics: metric names, ranked by the first; ``"all"`` = every metric rank can feed.
        ground_truth: ``dataset,model,accuracy`` CSV: adds accuracies and the §5 statistics per metric.
        features: directory of precomputed ``{model}_{dataset}_feature.npy`` / ``_label.npy`` files.
        normalise: report zoo-relative min–max normalised scores (as NCTI/ETran need).
        out: ``.csv`` / ``.md`` / ``.json`` file(s) for the leaderboard; plot: a ``.png`` bar chart.
        only, split, max_per_class, seed, cache, device: extraction settings (see ``transfersel extract``).
        options: per-metric keyword options, ``{"nleep": {"seed": 1}}``.
        n_boot: bootstrap resamples for the sd of τ_w.
        label_targets: what EMMS (and, for per-sample targets, LogME) scores against: embedded class names,
            captions or numbers (:class:`transfersel.targets.LabelTargets`).
    """
    notes: list[str] = []
    gt = _ground_truth(ground_truth)
    dataset, feats = _features(
        data,
        models=models,
        features=features,
        ground_truth=gt,
        notes=notes,
        only=only,
        split=split,
        max_per_class=max_per_class,
        seed=seed,
        cache=cache,
        device=device,
    )
    E, T = (None, None)
    if label_targets is not None:
        if label_targets.cache is None and cache is not None:  # embeddings live next to the features
            label_targets = replace(label_targets, cache=cache)
        E, T = label_targets.build(
            data,
            n_samples=len(feats[0].labels),
            device=device,
            split=split,
            max_per_class=max_per_class,
            seed=seed,
        )
    board = _rank(
        dataset,
        feats,
        metrics,
        gt,
        normalise=normalise,
        notes=notes,
        device=device,
        options=options,
        n_boot=n_boot,
        label_embeddings=E,
        targets=T,
    )
    for path in _outputs(out):
        write_table(board.table(), path, **board.to_dict())
    if plot is not None:
        key = "normalised" if normalise else "scores"
        plot_scores(
            board.models,
            {m: [getattr(r, key)[m] for r in board.rows] for m in board.metrics},
            plot,
            title=board.table().title,
        )
    return board


@dataclass(frozen=True)
class Evaluation:
    """Metrics × datasets agreement with the ground truth (the papers' τ_w table) and every statistic."""

    leaderboards: tuple[Leaderboard, ...]
    correlations: tuple[Correlation, ...]
    tau: TauTable
    notes: tuple[str, ...] = field(default=())

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


def evaluate(
    data: Sequence[PathLike],
    *,
    ground_truth: PathLike | GroundTruth,
    models: PathLike | None = None,
    metrics: Sequence[str] = ("all",),
    features: PathLike | None = None,
    scores: PathLike | None = None,
    out: PathLike | Sequence[PathLike] | None = None,
    plot: PathLike | None = None,
    n_boot: int = 1000,
    **rank_options: Any,
) -> Evaluation:
    """Correlate metric scores with fine-tuned accuracy over several datasets (spec §5).

    ``data``: dataset folders (with ``models``) or dataset names (with ``features`` or ``scores``; empty =
    every dataset of the ground truth that has feature files / scores). ``scores``: a
    ``dataset,model,metric,score`` CSV of already computed scores (e.g. a paper's table) instead of features.
    ``out``: the τ_w table as ``.md`` / ``.csv`` / ``.json`` (JSON also holds every statistic); ``plot``:
    score-vs-accuracy PNG, one panel per dataset, scores zoo-normalised.
    Other keyword arguments are :func:`rank`'s.
    """
    gt = _ground_truth(ground_truth)
    if scores is not None:
        boards = _boards_from_scores(scores, data, metrics, gt, n_boot=n_boot)
    else:
        boards = _boards_from_features(data, gt, models, metrics, features, n_boot=n_boot, **rank_options)
    correlations = tuple(c for b in boards for c in b.correlations)
    where: dict[str, list[str]] = {}
    for b in boards:
        for n in b.notes:
            where.setdefault(n, []).append(b.dataset)
    notes = tuple(n if len(ds) == len(boards) else f"{', '.join(ds)}: {n}" for n, ds in where.items())
    result = Evaluation(boards, correlations, tau_table(correlations), notes)
    for path in _outputs(out):
        extra = {"correlations": [vars(c) for c in correlations], "average": result.tau.average}
        write_table(result.table(), path, **extra)
    if plot is not None:
        panels = []
        for b in boards:
            by_metric = {c.metric: c.weighted_tau for c in b.correlations}
            series = tuple(
                (f"{m} τw={by_metric[m]:.2f}", tuple(r.normalised[m] for r in b.rows)) for m in b.metrics
            )
            panels.append(ScatterPanel(b.dataset, tuple(b.models), tuple(r.accuracy for r in b.rows), series))
        plot_scatter(panels, plot, xlabel="score (zoo-normalised)")
    return result


def _boards_from_scores(
    path: PathLike, data: Sequence[PathLike], metrics: Sequence[str], gt: GroundTruth, *, n_boot: int
) -> tuple[Leaderboard, ...]:
    """Leaderboards of precomputed scores (``dataset,model,metric,score``); models in the file's order."""
    table = read_scores_csv(path)
    datasets = [str(d) for d in data] or [d for d in table if d in gt.accuracy]
    unknown = [d for d in datasets if d not in table]
    if unknown or not datasets:
        raise InputError(
            f"{path} has no scores for {', '.join(unknown) or 'any dataset of the ground truth'}; "
            f"it has: {', '.join(table)}"
        )
    boards = []
    for d in datasets:
        names = list(table[d]) if "all" in metrics else list(dict.fromkeys(metrics))
        missing = [m for m in names if m not in table[d]]
        if missing:
            raise InputError(
                f"{path} has no {', '.join(missing)} scores for {d}; it has: {', '.join(table[d])}"
            )
        order = list(table[d][names[0]])
        nan = {m: dict.fromkeys(order, math.nan) for m in names}
        per_metric = {m: {x: table[d][m].get(x, math.nan) for x in order} for m in names}
        boards.append(
            _leaderboard(
                d, names, order, per_metric, nan, ground_truth=gt, normalise=False, notes=[], n_boot=n_boot
            )
        )
    return tuple(boards)


def _boards_from_features(
    data: Sequence[PathLike],
    gt: GroundTruth,
    models: PathLike | None,
    metrics: Sequence[str],
    features: PathLike | None,
    *,
    n_boot: int,
    **rank_options: Any,
) -> tuple[Leaderboard, ...]:
    if not data:
        if features is None:
            raise InputError("pass --data at least once")
        data = [d for d in gt.datasets if any(Path(features).glob(f"*_{d}_feature.npy"))]
        if not data:
            raise InputError(
                f"{features} has no *_{{dataset}}_feature.npy for any dataset of the ground truth"
            )
    return tuple(
        rank(
            d,
            models=models,
            metrics=metrics,
            ground_truth=gt,
            features=features,
            n_boot=n_boot,
            **rank_options,
        )
        for d in data
    )


@dataclass(frozen=True)
class EnsembleResult:
    """The selected ensemble, the leaderboard it came from, and the ground-truth accuracies if given."""

    ensemble: Ensemble
    leaderboard: Leaderboard

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


def select_ensemble(
    data: PathLike,
    *,
    k: int = 3,
    metric: str = "sfda",
    models: PathLike | None = None,
    ground_truth: PathLike | GroundTruth | None = None,
    features: PathLike | None = None,
    complementarity: str = "nuclear",
    mode: str = "greedy",
    r: float = 0.5,
    out: PathLike | Sequence[PathLike] | None = None,
    max_rows: int = 5000,
    only: Sequence[str] | None = None,
    split: str = "train",
    max_per_class: int | None = None,
    seed: int = 0,
    cache: PathLike | None = None,
    device: str = "auto",
    options: dict[str, dict[str, Any]] | None = None,
) -> EnsembleResult:
    """Select ``k`` transferable and complementary models (spec §6.2).

    ``metric`` scores the models; ``complementarity`` ("nuclear" | "cka"), ``mode`` ("greedy" |
    "sfda-oneshot", unverified reading of SFDA Eq. 8-9) and ``r`` are :func:`transfersel.ensemble.select`'s;
    ``max_rows`` caps the class-stratified rows of the Fisher features. ``out``: ``.csv``/``.json``/``.md``.
    Other arguments are :func:`rank`'s.
    """
    from transfersel.ensemble import select

    notes: list[str] = []
    gt = _ground_truth(ground_truth)
    dataset, feats = _features(
        data,
        models=models,
        features=features,
        ground_truth=gt,
        notes=notes,
        only=only,
        split=split,
        max_per_class=max_per_class,
        seed=seed,
        cache=cache,
        device=device,
    )
    labels = np.asarray(feats[0].labels)
    for f in feats[1:]:
        if not np.array_equal(np.asarray(f.labels), labels):
            raise InputError(
                f"{f.model} and {feats[0].model} were extracted on different samples; re-extract both"
            )
    board = _rank(
        dataset,
        feats,
        [metric],
        gt,
        normalise=False,
        notes=notes,
        device=device,
        options=options,
        n_boot=1000,
    )
    name = board.metrics[0]
    ensemble = select(
        [f.model for f in feats],
        [next(r.scores[name] for r in board.rows if r.model == f.model) for f in feats],
        [f.features for f in feats],
        labels,
        k=k,
        r=r,
        complementarity=complementarity,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        metric=name,
        max_rows=max_rows,
        seed=seed,
    )
    result = EnsembleResult(ensemble, board)
    for path in _outputs(out):
        write_table(
            result.table(),
            path,
            picks=[vars(p) for p in ensemble.picks],
            top_k_by_score=ensemble.top_k_by_score,
        )
    return result
