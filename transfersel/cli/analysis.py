"""Commands that score features: ``metrics``, ``score``, ``rank``, ``evaluate``, ``ensemble``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from transfersel.cli.app import (
    REDUCE_DEFAULT,
    DataOpt,
    DataOptions,
    FeaturesOpt,
    GroundTruthOpt,
    MetricsOpt,
    OutOpt,
    ReduceOpt,
    VerboseOpt,
    app,
    data_options,
    executor_options,
    exit_if_partial,
    show_tables,
    target_options,
    user_errors,
    wrote,
)
from transfersel.features import load_array


@app.command("metrics")
@user_errors
def metrics_cmd() -> None:
    """List the registered metrics, what each needs and what it reproduces."""
    from transfersel.metrics import list_metrics
    from transfersel.report import Table

    rows = tuple(
        (
            m.name,
            ", ".join(m.needs) or "-",
            m.description,
            ", ".join(f"{k}={v!r}" for k, v in m.options.items()),
        )
        for m in list_metrics(pool=None)
    )
    show_tables(Table(("metric", "needs", "description", "options"), rows))


@app.command("score")
@user_errors
def score_cmd(
    features: Annotated[Path, typer.Argument(help="(N, D) features .npy")],
    labels: Annotated[Path, typer.Argument(help="(N,) labels .npy (any values)")],
    metric: MetricsOpt = None,
    logits: Annotated[Path | None, typer.Option(help="(N, K) source logits .npy (LEEP, NCE)")] = None,
    label_embeddings: Annotated[
        Path | None, typer.Option("--label-embeddings", help="(K, C, D2) class embeddings .npy (EMMS)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Score precomputed features with one or more metrics (the paper repos' workflow)."""
    import time

    from transfersel.metrics import check_inputs
    from transfersel.report import Table
    from transfersel.scoring import plan_metrics

    L = load_array(logits, "logits") if logits else None
    E = load_array(label_embeddings, "label embeddings") if label_embeddings else None
    have = [n for n, a in (("logits", L), ("label_embeddings", E)) if a is not None]
    hints = {
        "logits": "pass --logits",
        "label_embeddings": "pass --label-embeddings (see `transfersel embed`)",
    }
    plan = plan_metrics(metric, available=have, hints=hints)
    inputs = check_inputs(
        load_array(features, "features"), load_array(labels, "labels"), logits=L, label_embeddings=E
    )
    rows, notes = [], list(plan.skipped.values())
    for m in plan.metrics:
        t0 = time.perf_counter()
        opts = plan.options.get(m.name, {})
        if m.pool:  # one feature file: its components; the score is relative to a pool of models
            parts = m.compute_components(inputs, **opts)
            seconds = time.perf_counter() - t0
            rows += [{"metric": f"{m.name}.{k}", "score": v, "seconds": seconds} for k, v in parts.items()]
            notes.append(
                f"{m.name} is pool-relative: these are one model's components; "
                "`transfersel rank` combines them over the models"
            )
            continue
        value = m.compute(inputs, **opts)
        rows.append({"metric": m.name, "score": value, "seconds": time.perf_counter() - t0})
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        title = f"{features.name}: N={inputs.N} D={inputs.D} C={inputs.C}"
        show_tables(
            Table(
                ("metric", "score", "seconds"),
                tuple((r["metric"], r["score"], round(r["seconds"], 3)) for r in rows),
                title,
                tuple(notes),
            )
        )
    exit_if_partial(plan.refused, {})


PlotOpt = Annotated[Path | None, typer.Option("--plot", help="figure (.png)")]


EXTRACT_ON = "where missing features are extracted: local (here), ray (a Ray task per model); scores: here"


@app.command("rank")
@user_errors
@executor_options(EXTRACT_ON)
@target_options()
@data_options()
def rank_cmd(
    data: DataOpt,
    opts: DataOptions,
    label_targets: Any,
    executor: Any,
    metric: MetricsOpt = None,
    features: FeaturesOpt = None,
    ground_truth: GroundTruthOpt = None,
    out: OutOpt = None,
    plot: PlotOpt = None,
    normalise: Annotated[bool, typer.Option("--normalise", help="zoo-relative min-max scores")] = False,
    iterations: Annotated[
        int, typer.Option("--iterations", help="emms alternating steps (1 = reference)")
    ] = 1,
    reduce: ReduceOpt = REDUCE_DEFAULT,
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence",
            help="say how sure the ranking is: rescore the first metric on draws of 80% of each class "
            "(class-stratified, without replacement, seeded by --seed); adds p(top), a ≈ mark for the models "
            "within noise of the top one, and score intervals in the files (and with --verbose). Off by "
            "default: it costs about --draws times the scoring",
        ),
    ] = False,
    draws: Annotated[
        int | None,
        typer.Option("--draws", help="resamples for --confidence (default 20)", show_default=False),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Rank the zoo's models on a dataset (extracting missing features), best first by the first metric.

    EMMS needs --embedder (class names), or --targets with --target-column (per-sample texts, or numbers
    with --regression; LogME then also scores those targets). A metric that cannot run is left out with a
    one-line reason and the exit status is 1; so is it when a model's input or a metric fails on a model
    (NaN, ranked last, named in the notes) while the others are ranked."""
    from transfersel.confidence import DRAWS, Resampling
    from transfersel.errors import InputError
    from transfersel.rank import rank

    if draws is not None and not confidence:
        raise InputError(f"--draws {draws} sets the resamples of --confidence; add --confidence")
    board = rank(
        data,
        metrics=metric or (),
        ground_truth=ground_truth,
        features=features,
        normalise=normalise,
        out=out,
        plot=plot,
        label_targets=label_targets,
        options={"emms": {"steps": iterations}} if iterations != 1 else None,
        progress=True,
        reduce=reduce,
        confidence=Resampling(draws=DRAWS if draws is None else draws) if confidence else False,
        executor=executor,
        **opts.rank_kwargs(),
    )
    extra = [board.correlation_table()] if board.correlations else []
    show_tables(board.table(seconds=verbose, baselines=verbose, intervals=verbose), *extra)
    wrote(*(out or ()), plot)
    exit_if_partial(board.refused, board.failures)


@app.command("evaluate")
@user_errors
@executor_options(EXTRACT_ON + "; datasets one after the other")
@target_options()
@data_options()
def evaluate_cmd(
    ground_truth: Annotated[Path, typer.Option("--ground-truth", help="CSV dataset,model,accuracy")],
    opts: DataOptions,
    label_targets: Any,
    executor: Any,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data", help="dataset folder or name (repeatable; with --features default: all in GT)"
        ),
    ] = None,
    metric: MetricsOpt = None,
    features: FeaturesOpt = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores", help="CSV dataset,model,metric,score of precomputed scores (instead of features)"
        ),
    ] = None,
    out: OutOpt = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="score-vs-accuracy scatter per dataset (.png)")
    ] = None,
    reduce: ReduceOpt = REDUCE_DEFAULT,
) -> None:
    """Correlate metric scores with fine-tuned accuracy: the metrics x datasets weighted-tau table."""
    from transfersel.rank import evaluate

    result = evaluate(
        data or [],
        ground_truth=ground_truth,
        metrics=metric or (),
        features=features,
        scores=scores,
        out=out,
        plot=plot,
        label_targets=label_targets,
        progress=True,
        reduce=reduce,
        executor=executor,
        **opts.rank_kwargs(),
    )
    show_tables(result.table(), result.correlation_table())
    wrote(*(out or ()), plot)
    exit_if_partial(result.refused, result.failures)


@app.command("ensemble")
@user_errors
@data_options()
def ensemble_cmd(
    data: DataOpt,
    opts: DataOptions,
    k: Annotated[int, typer.Option("--k", help="number of models to select")] = 3,
    metric: MetricsOpt = None,
    complementarity: Annotated[str, typer.Option(help="nuclear or cka")] = "nuclear",
    mode: Annotated[
        str, typer.Option(help="greedy, or sfda-oneshot (our reading of SFDA Eq. 8-9; unverified)")
    ] = "greedy",
    r: Annotated[float, typer.Option(help="weight of transferability vs complementarity")] = 0.5,
    features: FeaturesOpt = None,
    ground_truth: GroundTruthOpt = None,
    out: OutOpt = None,
    reduce: ReduceOpt = REDUCE_DEFAULT,
) -> None:
    """Select k models that are transferable and complementary (greedy, deterministic); one -m metric."""
    from transfersel.errors import InputError
    from transfersel.rank import select_ensemble
    from transfersel.scoring import DEFAULT_METRICS

    chosen = list(metric or DEFAULT_METRICS)
    if len(chosen) != 1:
        raise InputError(
            f"ensemble scores by one metric, got {len(chosen)} ({', '.join(chosen)}); pass -m once"
        )
    result = select_ensemble(
        data,
        k=k,
        metric=chosen[0],
        ground_truth=ground_truth,
        features=features,
        complementarity=complementarity,
        mode=mode,
        r=r,
        out=out,
        reduce=reduce,
        **opts.rank_kwargs(),
    )
    show_tables(result.table())
    wrote(*(out or ()))
    exit_if_partial(result.leaderboard.refused, result.leaderboard.failures)
