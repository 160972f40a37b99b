"""Scoring: one loop that scores every model with every metric, and the leaderboard built from the scores.

Ranks: 1 is best; NaN scores (the metric could not score that model) rank last and are listed in the notes;
ties keep zoo order and are noted.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from transfersel.agreement import GroundTruth, correlate, minmax, read_scores_csv, score_ties, top_k
from transfersel.errors import InputError, TransferselError
from transfersel.features import ModelFeatures
from transfersel.metrics import Metric
from transfersel.progress import StepProgress
from transfersel.results import Leaderboard, Row

__all__ = [
    "MetricPlan",
    "parse_metric",
    "plan_metrics",
    "DEFAULT_METRICS",
    "build_leaderboard",
    "leaderboards_from_scores",
    "score_models",
]

DEFAULT_METRICS: tuple[str, ...] = ("sfda",)
"""The metric every command uses when none is given (the recommended selector)."""


INPUT_HINTS: dict[str, str] = {
    "logits": "pass source logits (a zoo model with a classifier head, or --logits)",
    "label_embeddings": "pass --embedder (e.g. minilm) or --targets with --target-column",
}


@dataclass(frozen=True)
class MetricPlan:
    """The metrics to score (in ranking order), their keyword options, and those left out with a reason.

    ``refused`` holds the reasons of metrics asked for by name that cannot run (a caller should say so in
    its exit status); metrics that ``"all"`` could not run are only in ``skipped``.
    """

    metrics: tuple[Metric, ...]
    options: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    refused: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metrics]


def parse_metric(spec: str) -> tuple[str, dict[str, Any]]:
    """``"knn:k=5,metric=cosine"`` -> ``("knn", {"k": 5, "metric": "cosine"})``; values are YAML scalars."""
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InputError(f"metric option {item!r} in {spec!r} is not KEY=VALUE; write e.g. knn:k=5")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return name.strip(), options


def plan_metrics(
    specs: Iterable[str] | None,
    *,
    available: Iterable[str] = ("logits", "label_embeddings"),
    options: Mapping[str, Mapping[str, Any]] | None = None,
    hints: Mapping[str, str] | None = None,
) -> MetricPlan:
    """The one rule for which metrics run: names (``knn:k=5`` options allowed), ``"all"``, or the default.

    Empty ``specs`` means :data:`DEFAULT_METRICS`; ``"all"`` means every registered metric (SFDA first, so
    it ranks). A metric whose ``needs`` are not among ``available`` inputs is left out with a one-line reason
    (``hints[input]`` says how to provide it); if no metric is left, raises :class:`InputError`. Unknown
    metric names and options raise before any work is done.
    """
    from transfersel.metrics import get_metric, list_metrics

    hints = {**INPUT_HINTS, **(hints or {})}
    have = set(available)
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (options or {}).items()}
    chosen, named = [], set()
    for spec in list(specs or ()) or list(DEFAULT_METRICS):
        name, opts = parse_metric(spec)
        if name == "all":
            chosen += sorted(list_metrics(), key=lambda m: m.name != "sfda")
            continue
        metric = get_metric(name)
        merged.setdefault(name, {}).update(opts)
        chosen.append(metric)
        named.add(name)
    metrics, skipped = [], {}
    for m in dict.fromkeys(chosen):
        unknown = set(merged.get(m.name, {})) - set(m.options)
        if unknown:
            raise InputError(
                f"{m.name} has no option {', '.join(sorted(unknown))}; its options are: "
                f"{', '.join(m.options) or 'none'}"
            )
        lacking = [n for n in m.needs if n not in have]
        if lacking:
            skipped[m.name] = (
                f"{m.name} cannot run: it needs {lacking[0].replace('_', ' ')}; {hints[lacking[0]]}"
            )
        else:
            metrics.append(m)
    if not metrics:
        raise InputError("no metric can run: " + "; ".join(skipped.values()))
    refused = tuple(why for name, why in skipped.items() if name in named)
    return MetricPlan(tuple(metrics), {k: v for k, v in merged.items() if v}, skipped, refused)


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
    progress: bool = False,
) -> tuple[list[str], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Score every model with every metric, sharing one validated input (and its Gram) per model.

    ``metrics`` follow :func:`plan_metrics` (``"all"``, ``knn:k=5``; metrics whose inputs are missing are left
    out with a note), ``options`` are per-metric keyword options. A model a metric
    cannot score (e.g. no source logits for LEEP, or a degenerate input it rejects) gets NaN and a note.
    Metric warnings are re-issued prefixed with the model name. ``label_embeddings`` (K, C, D2) feed EMMS;
    per-sample ``targets`` (K, N, D2) (captions, numbers; :mod:`transfersel.targets`) replace the class labels
    of EMMS and LogME (LogME + F-label). ``progress`` shows a bar over the (model, metric) scores.

    Returns:
        ``(metric names, scores[metric][model], seconds[metric][model])``.
    """
    notes = [] if notes is None else notes
    embeddings = label_embeddings is not None or targets is not None
    plan = plan_metrics(
        metrics, available=("logits", *(["label_embeddings"] if embeddings else [])), options=options
    )
    notes.extend(plan.skipped.values())
    chosen, options, names = plan.metrics, plan.options, plan.names
    scores: dict[str, dict[str, float]] = {n: {} for n in names}
    seconds: dict[str, dict[str, float]] = {n: {} for n in names}
    with StepProgress(progress, "scoring") as bar:
        bar.start(len(models) * len(chosen))
        for mf in models:
            _score_one(mf, chosen, options, scores, seconds, notes, bar, device, label_embeddings, targets)
    return names, scores, seconds


def _score_one(
    mf: ModelFeatures,
    chosen: Sequence[Metric],
    options: dict[str, dict[str, Any]],
    scores: dict[str, dict[str, float]],
    seconds: dict[str, dict[str, float]],
    notes: list[str],
    bar: StepProgress,
    device: str | None,
    label_embeddings: np.ndarray | None,
    targets: np.ndarray | None,
) -> None:
    """Every metric on one model, sharing one validated input; fills ``scores``/``seconds`` in place."""
    from transfersel.metrics import check_inputs
    from transfersel.targets import embeddings_for_labels, per_sample_metric

    logits = _logits_or_none(mf.logits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        E = None if label_embeddings is None else embeddings_for_labels(label_embeddings, mf.labels)
        inputs = check_inputs(mf.features, mf.labels, logits=logits, label_embeddings=E, device=device)
        for metric in chosen:
            bar.describe(f"scoring {mf.model}: {metric.name}")
            t0 = time.perf_counter()
            if "logits" in metric.needs and logits is None:
                value = math.nan
                notes.append(f"{mf.model}: {metric.name} needs source logits, which this model has none of")
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
            bar.advance()
    for w in caught:
        warnings.warn_explicit(f"{mf.model}: {w.message}", w.category, w.filename, w.lineno)


def build_leaderboard(
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


def leaderboards_from_scores(
    path: str | Path, data: Sequence[str | Path], metrics: Sequence[str], gt: GroundTruth, *, n_boot: int
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
            build_leaderboard(
                d, names, order, per_metric, nan, ground_truth=gt, normalise=False, notes=[], n_boot=n_boot
            )
        )
    return tuple(boards)
