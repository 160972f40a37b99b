"""Scoring: one loop that scores every model with every metric, and the leaderboard built from the scores.

Ranks: 1 is best; NaN scores (the metric could not score that model) rank last and are listed in the notes;
tied scores share a rank and are noted (an all-tie once per metric, never ordered by zoo order).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from transfersel.agreement import GroundTruth, correlate, minmax, read_scores_csv
from transfersel.errors import InputError, TransferselError
from transfersel.features import ModelFeatures
from transfersel.metrics import SUBSAMPLE_SEED, Metric, get_metric, saturation
from transfersel.progress import StepProgress
from transfersel.regimes import all_tie, reduce_label, reduce_note, saturation_note, tie_groups, tie_ranks
from transfersel.results import Leaderboard, Row

__all__ = [
    "MetricPlan",
    "parse_metric",
    "plan_metrics",
    "DEFAULT_METRICS",
    "build_leaderboard",
    "leaderboards_from_scores",
    "Scored",
    "score_models",
]

DEFAULT_METRICS: tuple[str, ...] = ("auto",)
"""The metric every command uses when none is given (the recommended selector)."""
PER_SAMPLE_DEFAULT: tuple[str, ...] = ("logme", "ridge", "knn_reg", "emms")
"""The default with per-sample targets (numbers, captions), where ``auto`` (class labels only) cannot run:
every metric with a per-sample form, LogME (its published regression mode) first. None of them beat the
feature-width prior against fine-tuning on the offline regression task (benchmarks/offline/REGRESSION.md)."""


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
    per_sample: bool = False,
) -> MetricPlan:
    """The one rule for which metrics run: names (``knn:k=5`` options allowed), ``"all"``, or the default.

    Empty ``specs`` means :data:`DEFAULT_METRICS` (:data:`PER_SAMPLE_DEFAULT` with ``per_sample``, said in
    ``skipped``); ``"all"`` means every registered metric, pool metrics
    included (SFDA first, so it ranks). A metric whose ``needs`` are not among ``available`` inputs is left
    out with a one-line reason (``hints[input]`` says how to provide it); so is, with ``per_sample``
    (per-sample targets: numbers or captions), a metric without a per-sample form: it would score the class
    folders instead. If no metric is left, raises :class:`InputError`. Unknown metric names and options
    raise before any work is done.
    """
    from transfersel.metrics import list_metrics
    from transfersel.targets import per_sample_metric

    hints = {**INPUT_HINTS, **(hints or {})}
    have = set(available)
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (options or {}).items()}
    chosen, named, metrics, skipped = [], set(), [], {}
    defaults = DEFAULT_METRICS
    if per_sample and not specs:
        defaults = PER_SAMPLE_DEFAULT
        skipped["auto"] = (
            "auto scores class labels only; with per-sample targets the default is "
            + ", ".join(PER_SAMPLE_DEFAULT)
        )
    for spec in list(specs or ()) or list(defaults):
        name, opts = parse_metric(spec)
        if name == "all":
            chosen += sorted(list_metrics(pool=None), key=lambda m: m.name != "sfda")
            continue
        metric = get_metric(name)
        merged.setdefault(name, {}).update(opts)
        chosen.append(metric)
        named.add(name)
    for m in dict.fromkeys(chosen):
        unknown = set(merged.get(m.name, {})) - set(m.options)
        if unknown:
            raise InputError(
                f"{m.name} has no option {', '.join(sorted(unknown))}; its options are: "
                f"{', '.join(m.options) or 'none'}"
            )
        lacking = [n for n in m.needs if n not in have]
        if per_sample and per_sample_metric(m.name) is None:
            forms = [x.name for x in list_metrics(pool=None) if per_sample_metric(x.name) is not None]
            skipped[m.name] = (
                f"{m.name} cannot run on per-sample targets: it scores class labels only; use "
                + ", ".join(forms)
            )
        elif lacking:
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


@dataclass
class Scored:
    """What :func:`score_models` measured.

    ``scores[metric][model]``, ``seconds[metric][model]``; ``dims[metric][model]`` the dimension a reducible
    metric scored (None = the features as they are), ``widths[model]`` the feature dimension D;
    ``notices`` the reduction lines (metrics with the same reduction share one), ``saturated[metric]`` the
    saturated-regime line; ``failures[model]`` the reasons a model got NaN because its input or a metric
    failed on it; ``subsampled[metric][model]`` the N of a model whose rows were above the cap of a metric
    that cannot stream (it scored a seeded stratified subsample, said once per metric in ``notices``).
    """

    names: list[str]
    scores: dict[str, dict[str, float]]
    seconds: dict[str, dict[str, float]]
    reduce: int | str | None = None
    dims: dict[str, dict[str, int | None]] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    saturated: dict[str, str] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    subsampled: dict[str, dict[str, int]] = field(default_factory=dict)

    def fail(self, model: str, reason: str, notes: list[str]) -> None:
        """Record that ``model`` got NaN for ``reason``, with one note naming the model."""
        self.failures.setdefault(model, []).append(reason)
        notes.append(f"{model}: {reason} (NaN, ranked last)")


def score_models(
    models: Sequence[ModelFeatures],
    metrics: Iterable[str],
    *,
    device: str | None = "cpu",
    options: dict[str, dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    label_embeddings: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    reduce: int | str | None = None,
    priors: Mapping[str, Mapping[str, float]] | None = None,
    progress: bool = False,
) -> Scored:
    """Score every model with every metric, sharing one validated input (and its Gram) per model.

    ``metrics`` follow :func:`plan_metrics` (``"all"``, ``knn:k=5``; metrics whose inputs are missing are left
    out with a note), ``options`` are per-metric keyword options, ``reduce`` (None, d, "auto") applies to the
    reducible metrics. Pool metrics (NCTI, ETran) are scored from every model's components, combined over
    the models (a pool of one model is a note, and NaN). Per-model isolation: a model whose input fails
    validation (NaN features, inf logits), or a metric that fails on it, gets NaN, a note naming the model
    and the reason, and an entry in ``failures``; the other models are scored. Metric warnings are re-issued
    once, naming their models; a saturation warning is replaced by the one-line notice.
    ``label_embeddings`` (K, C, D2) feed EMMS; per-sample ``targets`` (K, N, D2) replace the class labels
    of EMMS and LogME. ``priors[model]`` (``{prior: value}``, :mod:`transfersel.priors`) go to the metrics
    that take a ``priors`` option (``auto``). ``progress`` shows a bar over the (model, metric) scores.
    """
    notes = [] if notes is None else notes
    embeddings = label_embeddings is not None or targets is not None
    plan = plan_metrics(
        metrics,
        available=("logits", *(["label_embeddings"] if embeddings else [])),
        options=options,
        per_sample=targets is not None,
    )
    notes.extend(plan.skipped.values())
    out = Scored(plan.names, {n: {} for n in plan.names}, {n: {} for n in plan.names}, reduce)
    shapes: dict[str, dict[str, tuple[int, int, int]]] = {n: {} for n in plan.names}
    pools: dict[str, dict[str, dict[str, float]]] = {m.name: {} for m in plan.metrics if m.pool}
    caught: list[tuple[str, Any]] = []
    with StepProgress(progress, "scoring") as bar:
        bar.start(len(models) * len(plan.names))
        for mf in models:
            mine = None if priors is None else priors.get(mf.model)
            job = _Job(mf, plan, out, notes, device, label_embeddings, targets, mine)
            job.run(shapes, pools, caught, bar)
    for name, comps in pools.items():
        try:
            pooled = get_metric(name).combine(comps) if comps else {}
        except InputError as exc:
            notes.append(f"{name}: not scored: {exc}")
            pooled = {}
        note = str(getattr(pooled, "note", "") or "")  # what a pool metric used (auto), said once
        if note:
            out.notices.append(note if note.startswith(name) else f"{name}: {note}")
        for model in out.scores[name]:
            out.scores[name][model] = pooled.get(model, math.nan)
    said: dict[str, list[str]] = {}  # metrics with the same reduction share one line
    for m in plan.metrics:
        if m.reducible and out.dims.get(m.name):
            what = reduce_note(m.name, reduce, out.dims[m.name], out.widths).split(": ", 1)[1]
            said.setdefault(what, []).append(m.name)
        line = saturation_note(m.name, shapes[m.name])
        if line:
            out.saturated[m.name] = line
    out.notices += [f"{', '.join(names)}: {what}" for what, names in said.items()]
    out.notices += [_subsample_note(get_metric(name), by_model) for name, by_model in out.subsampled.items()]
    _reissue(caught)
    return out


_SATURATION_WORDS = ("saturat", "wide regime")


def _subsample_note(metric: Metric, rows: Mapping[str, int]) -> str:
    """One line: ``metric`` scored a seeded stratified subsample for these models (``{model: N}``)."""
    who = ", ".join(f"{model} (N = {n})" for model, n in rows.items())
    return (
        f"{metric.name}: scored a class-stratified subsample of {metric.max_rows} rows, "
        f"seed {SUBSAMPLE_SEED} (it cannot stream) for {who}"
    )


@dataclass
class _Job:
    """Every metric on one model, sharing one validated input; fills ``out`` in place."""

    mf: ModelFeatures
    plan: MetricPlan
    out: Scored
    notes: list[str]
    device: str | None
    label_embeddings: np.ndarray | None
    targets: np.ndarray | None
    priors: Mapping[str, float] | None = None

    def run(
        self,
        shapes: dict[str, dict[str, tuple[int, int, int]]],
        pools: dict[str, dict[str, dict[str, float]]],
        caught: list[tuple[str, Any]],
        bar: StepProgress,
    ) -> None:
        """A model whose input fails validation gets NaN for every metric and a failure; the run goes on."""
        from transfersel.metrics import check_inputs
        from transfersel.targets import embeddings_for_labels

        model, out = self.mf.model, self.out
        for name in self.plan.names:
            out.scores[name][model] = math.nan
            out.seconds[name][model] = 0.0
        try:
            with warnings.catch_warnings(record=True) as found:
                warnings.simplefilter("always")
                E = (
                    None
                    if self.label_embeddings is None
                    else embeddings_for_labels(self.label_embeddings, self.mf.labels)
                )
                logits = _logits_or_none(self.mf.logits)
                inputs = check_inputs(
                    self.mf.features, self.mf.labels, logits=logits, label_embeddings=E, device=self.device
                )
        except TransferselError as exc:
            out.fail(model, f"invalid input: {exc}", self.notes)
            for _ in self.plan.names:
                bar.advance()
            return
        caught += [(model, w) for w in found]
        out.widths[model] = inputs.D
        for metric in self.plan.metrics:
            bar.describe(f"scoring {model}: {metric.name}")
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as found:
                warnings.simplefilter("always")
                value = self._score(metric, inputs, pools)
            d = metric.describe_reduce(inputs.N, inputs.D, inputs.C, out.reduce)
            if metric.reducible:
                out.dims.setdefault(metric.name, {})[model] = d
            shapes[metric.name][model] = (inputs.N, inputs.D if d is None else d, inputs.C)
            saturated = saturation(metric.name, *shapes[metric.name][model]) is not None
            caught += [
                (model, w)
                for w in found
                if not (saturated and any(k in str(w.message) for k in _SATURATION_WORDS))
            ]
            if metric.subsamples(inputs.N):
                out.subsampled.setdefault(metric.name, {})[model] = inputs.N
            out.scores[metric.name][model] = value
            out.seconds[metric.name][model] = time.perf_counter() - t0
            bar.advance()

    def _score(self, metric: Metric, inputs: Any, pools: dict[str, dict[str, dict[str, float]]]) -> float:
        """One metric's score, or NaN (a pool metric stores its components for :meth:`Metric.combine`)."""
        from transfersel.targets import per_sample_metric

        model = self.mf.model
        if "logits" in metric.needs and inputs.logits is None:
            self.notes.append(f"{model}: {metric.name} needs source logits, which this model has none of")
            return math.nan
        opts = self.plan.options.get(metric.name, {})
        if self.priors is not None and "priors" in metric.options and "priors" not in opts:
            opts = {**opts, "priors": dict(self.priors)}
        try:
            if metric.pool:
                pools[metric.name][model] = metric.compute_components(inputs, reduce=self.out.reduce, **opts)
                return math.nan  # combined over the models afterwards
            per_sample = per_sample_metric(metric.name) if self.targets is not None else None
            if per_sample is not None:  # the D×D metrics score the same projection as on class labels
                X = (inputs.reduced(self.out.reduce) if metric.reducible else inputs).X
                value = float(per_sample(X, self.targets, device=self.device, **opts))
            else:
                value = metric.compute(inputs, reduce=self.out.reduce, **opts)
        except (TransferselError, np.linalg.LinAlgError) as exc:
            self.out.fail(model, f"{metric.name} failed: {exc}", self.notes)
            return math.nan
        if math.isnan(value):
            self.out.fail(model, f"{metric.name} returned NaN (see its warning)", self.notes)
        return value


def _reissue(caught: list[tuple[str, Any]]) -> None:
    """Re-issue the metrics' warnings once each: the same text (up to its numbers) names all its models."""
    groups: dict[tuple[str, type], list[tuple[str, Any]]] = {}
    for model, w in caught:
        key = (re.sub(r"[-+]?\d[\d.,e+−-]*", "#", str(w.message)), w.category)
        groups.setdefault(key, []).append((model, w))
    for group in groups.values():
        models = list(dict.fromkeys(m for m, _ in group))
        w = group[0][1]
        who = models[0] if len(models) == 1 else f"{models[0]} (and {', '.join(models[1:])})"
        warnings.warn_explicit(f"{who}: {w.message}", w.category, w.filename, w.lineno)


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
    scored: Scored | None = None,
) -> Leaderboard:
    """The leaderboard of ``scores[metric][model]`` (models in zoo ``order``), ranked by ``names[0]``.

    Tied scores (within :data:`transfersel.regimes.REL_TIE`) share a rank; a saturated regime and an all-tie
    are one line per metric, other ties of the first metric one note per group; NaN scores rank last.
    ``scored`` adds the reduction, the per-metric notices and the per-model failures.
    """
    ranks: dict[str, dict[str, int]] = {}
    normalised: dict[str, dict[str, float]] = {}
    notices = list(scored.notices) if scored is not None else []
    for m in names:
        s = [scores[m][model] for model in order]
        ranks[m] = dict(zip(order, tie_ranks(s), strict=True))
        normalised[m] = dict(zip(order, map(float, minmax(s)), strict=True))
        nan_models = [model for model, v in zip(order, s, strict=True) if math.isnan(v)]
        unexplained = [x for x in nan_models if not _explained(scored, x, m)]
        if unexplained:
            notes.append(f"{m}: NaN for {', '.join(unexplained)} (ranked last)")
        line = scored.saturated.get(m) if scored is not None else None
        if all_tie(s):
            value = next(v for v in s if math.isfinite(v))
            tie = f"all {len(s) - len(nan_models)} scored models tie at {value:.6g} (equal ranks)"
            line = f"{line}; {tie}" if line else f"{m}: {tie}: no ranking information"
        elif m == names[0]:
            for group in tie_groups(s, order):
                notes.append(f"{m}: tied scores for {', '.join(group)} (equal ranks)")
        if line:
            notices.append(line)
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
    rows.sort(key=lambda r: r.ranks[names[0]])
    return Leaderboard(
        dataset,
        tuple(names),
        tuple(rows),
        correlations,
        tuple(dict.fromkeys([*notices, *notes])),
        normalise,
        reduce=None if scored is None else reduce_label(scored.reduce),
        dims={} if scored is None else _scored_dims(scored),
        failures={} if scored is None else {m: "; ".join(r) for m, r in scored.failures.items()},
    )


def _explained(scored: Scored | None, model: str, metric: str) -> bool:
    """Whether a failure note already says why ``model`` has no ``metric`` score (not repeated per metric)."""
    reasons = scored.failures.get(model, []) if scored is not None else []
    return any(r.startswith(("invalid input", f"{metric} ")) for r in reasons)


def _scored_dims(scored: Scored) -> dict[str, dict[str, int]]:
    """Per reducible metric and model the dimension it scored: the projection's d, or D unreduced."""
    return {
        m: {model: scored.widths[model] if d is None else d for model, d in per.items()}
        for m, per in scored.dims.items()
    }


def leaderboards_from_scores(
    path: str | Path, data: Sequence[str | Path], metrics: Sequence[str], gt: GroundTruth, *, n_boot: int
) -> tuple[Leaderboard, ...]:
    """Leaderboards of precomputed scores (``dataset,model,metric,score``); models in the file's order.
    ``metrics`` empty or holding ``"all"``: every metric of the file (the default has nothing to compute)."""
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
        names = list(table[d]) if not metrics or "all" in metrics else list(dict.fromkeys(metrics))
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
