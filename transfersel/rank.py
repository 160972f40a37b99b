"""``rank``, ``evaluate`` and ``select_ensemble``: the Python API behind the CLI commands of the same names.

Each function gets per-model features (:mod:`transfersel.features`), scores them
(:mod:`transfersel.scoring`) and returns a plain dataclass (:mod:`transfersel.results`) whose ``table()`` the
CLI renders and writes (:mod:`transfersel.report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transfersel.agreement import GroundTruth, read_ground_truth, tau_table
from transfersel.confidence import Resampling, check_pool, check_resampling, resample, resolve_confidence
from transfersel.errors import InputError
from transfersel.features import ModelFeatures, get_features
from transfersel.priors import priors_for_features
from transfersel.regimes import resolve_reduce
from transfersel.report import ScatterPanel, check_outputs, plot_scatter, plot_scores, write_table
from transfersel.results import EnsembleResult, Evaluation, Leaderboard
from transfersel.scoring import (
    DEFAULT_METRICS,
    MetricPlan,
    build_leaderboard,
    leaderboards_from_scores,
    plan_metrics,
    score_models,
)

if TYPE_CHECKING:
    from transfersel.executor import Executor
    from transfersel.targets import LabelTargets

__all__ = ["evaluate", "rank", "select_ensemble"]

PathLike = str | Path


def _ground_truth(ground_truth: PathLike | GroundTruth | None) -> GroundTruth | None:
    if ground_truth is None or isinstance(ground_truth, GroundTruth):
        return ground_truth
    return read_ground_truth(ground_truth)


def _outputs(out: PathLike | Sequence[PathLike] | None) -> list[Path]:
    if out is None:
        return []
    return [Path(out)] if isinstance(out, str | Path) else [Path(p) for p in out]


LOGME_DEFAULT = "padded"
"""LogME's variant in rank/evaluate/ensemble: exact evidence for N ≤ D, the reference's value for N > D."""


def _plan(
    metrics: Sequence[str],
    options: dict[str, dict[str, Any]] | None,
    *,
    embeddings: bool,
    per_sample: bool = False,
) -> MetricPlan:
    """Which metrics run, decided (and refused when none can) before any feature is extracted; with
    ``per_sample`` targets only the metrics that have a per-sample form.

    LogME gets ``variant="padded"`` unless the caller chose a variant (``-m logme:variant=fixed_point``).
    """
    plan = plan_metrics(
        metrics,
        available=("logits", *(("label_embeddings",) if embeddings else ())),
        options=options,
        per_sample=per_sample,
    )
    if "logme" in plan.names and "variant" not in plan.options.get("logme", {}):
        plan.options["logme"] = {**plan.options.get("logme", {}), "variant": LOGME_DEFAULT}
    return plan


def _option_notes(plan: MetricPlan) -> list[str]:
    """One line per default this module chose for a metric (what the output used)."""
    if plan.options.get("logme", {}).get("variant") == LOGME_DEFAULT:
        return ["logme: variant padded (exact evidence for N <= D; the reference's value when N > D)"]
    return []


def _add_baselines(scored: Any, priors: dict[str, dict[str, float]]) -> None:
    """The priors as extra columns after the metrics (target-free baselines; never the ranking metric);
    a prior unknown for every model is left out."""
    import math

    from transfersel.priors import PRIORS

    models = list(next(iter(scored.scores.values()), {}))
    for name in PRIORS:
        values = {m: float(priors.get(m, {}).get(name, math.nan)) for m in models}
        if any(math.isfinite(v) for v in values.values()):
            scored.names.append(name)
            scored.scores[name] = values
            scored.seconds[name] = dict.fromkeys(models, 0.0)
    if any(n in PRIORS for n in scored.names):
        scored.notices.append(
            "prior_*: target-free baselines from the zoo (a metric should beat them); "
            "in written files, and on screen with --verbose"
        )


def _rank(
    dataset: str,
    feats: list[ModelFeatures],
    plan: MetricPlan,
    gt: GroundTruth | None,
    *,
    normalise: bool,
    notes: list[str],
    device: str,
    n_boot: int,
    label_embeddings: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    progress: bool = False,
    reduce: int | str | None = None,
    priors: dict[str, dict[str, float]] | None = None,
    baselines: bool = False,
) -> Leaderboard:
    notes.extend(plan.skipped.values())
    scored = score_models(
        feats,
        plan.names,
        device=device,
        options=plan.options,
        notes=notes,
        label_embeddings=label_embeddings,
        targets=targets,
        reduce=reduce,
        priors=priors,
        progress=progress,
    )
    scored.notices[:0] = _option_notes(plan)
    if baselines and priors:
        _add_baselines(scored, priors)
    board = build_leaderboard(
        dataset,
        scored.names,
        [f.model for f in feats],
        scored.scores,
        scored.seconds,
        ground_truth=gt,
        normalise=normalise,
        notes=[n for n in notes if n not in plan.refused],
        n_boot=n_boot,
        scored=scored,
    )
    return replace(board, refused=plan.refused, options=plan.options)


def rank(
    data: PathLike,
    *,
    models: PathLike | None = None,
    metrics: Sequence[str] = (),
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
    progress: bool = False,
    reduce: int | str | None = "default",
    confidence: bool | Resampling = False,
    executor: Executor | None = None,
) -> Leaderboard:
    """Rank the models of a zoo on a dataset by one or more transferability metrics.

    Args:
        data: an ImageFolder dataset (with ``models``), or the dataset name used in the ``features`` files.
        models: zoo YAML; features come from the cache, extracting what is missing.
        metrics: metric names (``knn:k=5`` sets an option), ranked by the first; ``"all"`` = every metric;
            empty = the default, ``auto`` (with per-sample targets: the metrics that have a per-sample form)
            (:func:`transfersel.scoring.plan_metrics`). A metric that cannot run is left out, listed in
            ``Leaderboard.refused``; if none can run, nothing is extracted and :class:`InputError` is raised.
        ground_truth: ``dataset,model,accuracy`` CSV: adds accuracies and the §5 statistics per metric.
        features: directory of precomputed ``{model}_{dataset}_feature.npy`` / ``_label.npy`` files.
        normalise: report zoo-relative min–max normalised scores (as NCTI/ETran need).
        out: ``.csv`` / ``.md`` / ``.json`` file(s) for the leaderboard; plot: a ``.png`` bar chart.
        only, split, max_per_class, seed, cache, device: extraction settings (see ``transfersel extract``).
        options: per-metric keyword options, ``{"nleep": {"seed": 1}}``.
        n_boot: bootstrap resamples for the sd of τ_w.
        label_targets: what EMMS (and, for per-sample targets, LogME) scores against: embedded class names,
            captions or numbers (:class:`transfersel.targets.LabelTargets`).
        progress: show a progress bar while scoring.
        reduce: ``"auto"``, None (``"none"``) or d: project the features of the D×D metrics on their top-d
            principal axes first (spec selection.md §2); ``"default"`` reads ``selection.json``. The
            leaderboard states it (caption, notes, ``{metric}_d`` columns, JSON ``reduce`` and ``dims``).
        confidence: True (20 draws) or a :class:`transfersel.confidence.Resampling`: rescore the ranking
            metric on seeded class-stratified subsamples without replacement (80 % of each class; seed
            ``seed`` unless the resampling has one) and fill ``Leaderboard.confidence`` (score intervals,
            p(top), within noise of the top). Opt-in: it costs about ``draws`` times the scoring.
        executor: where the missing features are extracted (None: here; ``Executor("ray")``: one Ray task per
            model, :func:`transfersel.distributed.extract_on`). Scoring runs in this process either way.

    LogME runs ``variant="padded"`` unless ``options`` choose one. Tied scores share a rank; a saturated
    regime or an all-tie is one note per metric. A model whose input or a metric fails gets NaN, ranks
    last and is listed in ``Leaderboard.failures``; the other models are still scored. Pool metrics (NCTI,
    ETran) are scored over all the models.

    Output paths, the ground truth's coverage of the models and the metrics' inputs are checked before any
    feature is extracted or scored.
    """
    if executor is not None and features is not None:
        executor.refuse_ray("--features")
    notes: list[str] = []
    reduce = resolve_reduce(reduce)
    resampling = resolve_confidence(confidence, seed)
    per_sample = label_targets is not None and label_targets.csv is not None
    plan = _plan(metrics, options, embeddings=label_targets is not None, per_sample=per_sample)
    check_outputs(_outputs(out), [plot])
    gt = _ground_truth(ground_truth)
    if resampling is not None and only:
        check_pool(only)  # a pool of one model is refused before extraction
    dataset, feats = get_features(
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
        executor=executor,
    )
    if resampling is not None:
        check_resampling(feats, resampling)
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
    priors = priors_for_features(feats, models, only=only)
    board = _rank(
        dataset,
        feats,
        plan,
        gt,
        normalise=normalise,
        notes=notes,
        device=device,
        n_boot=n_boot,
        label_embeddings=E,
        targets=T,
        progress=progress,
        reduce=reduce,
        priors=priors,
        baselines=models is not None,  # the zoo's cards; precomputed features give only D
    )
    if resampling is not None:
        same = {"device": device, "label_embeddings": E, "targets": T, "reduce": reduce, "priors": priors}
        board = replace(board, confidence=resample(board, feats, resampling, progress=progress, **same))
    appendix = [board.correlation_table()] if board.correlations else []
    for path in _outputs(out):
        table = board.table(seconds=True, dims=True, intervals=True)
        write_table(table, path, appendix=appendix, **board.to_dict())
    if plot is not None:
        key = "normalised" if normalise else "scores"
        plot_scores(
            board.models,
            {m: [getattr(r, key)[m] for r in board.rows] for m in board.metrics},
            plot,
            title=board.table().title,
            accuracy=[r.accuracy for r in board.rows] if gt is not None else None,
        )
    return board


def evaluate(
    data: Sequence[PathLike],
    *,
    ground_truth: PathLike | GroundTruth,
    models: PathLike | None = None,
    metrics: Sequence[str] = (),
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
    Other keyword arguments are :func:`rank`'s; with ``executor=Executor("ray")`` the datasets are extracted
    one after the other (each dataset's models as parallel Ray tasks, on one Ray for the whole call).
    """
    from transfersel.executor import session

    given = "--scores" if scores is not None else "--features" if features is not None else None
    if rank_options.get("executor") is not None and given:
        rank_options["executor"].refuse_ray(given)
    check_outputs(_outputs(out), [plot])
    gt = _ground_truth(ground_truth)
    if scores is not None:
        boards = leaderboards_from_scores(scores, data, metrics, gt, n_boot=n_boot)
    else:
        with session(rank_options.get("executor")):
            boards = _boards_from_features(data, gt, models, metrics, features, n_boot=n_boot, **rank_options)
    correlations = tuple(c for b in boards for c in b.correlations)
    where: dict[str, list[str]] = {}
    for b in boards:
        for n in b.notes:
            where.setdefault(n, []).append(b.dataset)
    notes = tuple(n if len(ds) == len(boards) else f"{', '.join(ds)}: {n}" for n, ds in where.items())
    refused = tuple(dict.fromkeys(r for b in boards for r in b.refused))
    notes = tuple(n for n in notes if n not in refused)
    failures = {f"{b.dataset}/{m}": why for b in boards for m, why in b.failures.items()}
    result = Evaluation(boards, correlations, tau_table(correlations), (*refused, *notes), refused, failures)
    for path in _outputs(out):
        extra = {
            "correlations": [vars(c) for c in correlations],
            "average": result.tau.average,
            "reduce": {b.dataset: b.reduce for b in boards},
            "dims": {b.dataset: b.dims for b in boards},
            "options": {b.dataset: b.options for b in boards},
            "failures": failures,
        }
        write_table(result.table(), path, **extra)
    if plot is not None:
        panels = []
        for b in boards:
            by_metric = {c.metric: c.weighted_tau for c in b.correlations}
            series = tuple(
                (f"{m} τw={by_metric[m]:.2f}", tuple(r.normalised[m] for r in b.rows)) for m in b.metrics
            )
            panels.append(ScatterPanel(b.dataset, tuple(b.models), tuple(r.accuracy for r in b.rows), series))
        plot_scatter(
            panels, plot, xlabel="score (zoo-normalised)", title="metric score vs fine-tuned accuracy"
        )
    return result


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


def select_ensemble(
    data: PathLike,
    *,
    k: int = 3,
    metric: str = DEFAULT_METRICS[0],
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
    reduce: int | str | None = "default",
) -> EnsembleResult:
    """Select ``k`` transferable and complementary models (spec §6.2).

    ``metric`` scores the models; ``complementarity`` ("nuclear" | "cka"), ``mode`` ("greedy" |
    "sfda-oneshot", unverified reading of SFDA Eq. 8-9) and ``r`` are :func:`transfersel.ensemble.select`'s;
    ``max_rows`` caps the class-stratified rows of the Fisher features. ``out``: ``.csv``/``.json``/``.md``.
    Other arguments (``reduce`` included) are :func:`rank`'s; a model whose score is NaN is not selected.
    """
    from transfersel.ensemble import select

    notes: list[str] = []
    reduce = resolve_reduce(reduce)
    plan = _plan([metric], options, embeddings=False)
    check_outputs(_outputs(out))
    gt = _ground_truth(ground_truth)
    dataset, feats = get_features(
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
        plan,
        gt,
        normalise=False,
        notes=notes,
        device=device,
        n_boot=1000,
        reduce=reduce,
        priors=priors_for_features(feats, models, only=only),
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
            reduce=board.reduce,
            dims=board.dims,
            options=board.options,
            failures=board.failures,
        )
    return result
