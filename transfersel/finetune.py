"""Ground truth by fine-tuning (spec §5.3–5.4): the papers' protocol, scaled to the budget.

``full``: every weight of the model is trained with a new, zero-initialised linear head on its features —
SGD with Nesterov momentum 0.9, a cosine schedule to 0 over ``steps``, the gradient's global L2 norm clipped
at ``grad_clip``, random-resized-crop augmentation, BatchNorm in train mode (traced TorchScript graphs bake
eval-mode normalisation, so theirs keeps the pretrained statistics). Each (lr, wd) of the grid is trained on
train minus a stratified ``val_fraction`` and scored on that held-out part; the best (ties: smaller lr, then
smaller wd) is retrained on all of train, once per seed, and scored on test. ``linear``: an L2
logistic-regression probe on cached features, its regularisation chosen the same way.

Every (dataset, model, mode, stage, config) result is appended to a JSON-lines run log as soon as it
finishes (one ``write`` + ``fsync`` per line, so a line is complete or absent), and a rerun skips what the
log already holds: an interrupted run resumes where it stopped. One model that fails is reported and the
others go on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.data import Dataset
from transfersel.errors import InputError
from transfersel.extract import extract
from transfersel.probe import linear_probe_accuracy, split_validation
from transfersel.progress import StepProgress
from transfersel.protocol import Protocol, RunLog, Runner, protocol_summary
from transfersel.regression import RegressionTargets
from transfersel.store import FeatureStore
from transfersel.trainer import full_runner, regression_runner
from transfersel.zoo import ModelEntry

__all__ = [
    "FinetuneReport",
    "Protocol",
    "RunLog",
    "finetune",
    "protocol_summary",
    "write_ground_truth",
]


@dataclass
class FinetuneReport:
    """Per model: the test score (mean over seeds) and the chosen configuration, or why it failed. The score
    is the accuracy in %, or with regression targets the mean R² over targets (``score_name`` says which)."""

    dataset: str
    mode: str
    score_name: str = "accuracy"
    accuracy: dict[str, float] = field(default_factory=dict)
    chosen: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    runs_done: int = 0  # runs computed by this call (the rest came from the log)
    runs_cached: int = 0


def finetune(
    zoo: Sequence[ModelEntry],
    train: Dataset,
    test: Dataset,
    *,
    protocol: Protocol | None = None,
    log: RunLog | str | Path,
    store: FeatureStore | None = None,
    device: str = "auto",
    progress: bool = True,
    targets: RegressionTargets | None = None,
) -> FinetuneReport:
    """Ground-truth accuracy of every zoo model on ``test`` after tuning on ``train`` (spec §5.4).

    ``train``/``test`` must share classes. ``log`` is the run log (path or :class:`RunLog`); ``store``
    holds the features ``linear`` mode probes (extracted when missing). With ``targets`` (``full`` mode,
    ``augment=False``) the models are fine-tuned by MSE on those regression targets instead of the class
    labels and scored by test R² (:func:`transfersel.trainer.regression_runner`); runs are logged as ``r2``.
    """
    protocol = protocol or Protocol()
    log = log if isinstance(log, RunLog) else RunLog(log)
    check_splits(train, test)
    if targets is not None:
        _check_regression(targets, train, test, protocol)
    report = FinetuneReport(train.name, protocol.mode, "accuracy" if targets is None else "r2")
    full = full_runner if targets is None else regression_runner(targets)
    task = {} if targets is None else {"targets": targets.fingerprint}
    with StepProgress(progress, "fine-tuning") as bar:
        linear = (
            _linear_runner(zoo, train, test, protocol, store, device, bar)
            if protocol.mode == "linear"
            else None
        )
        if linear is not None:  # linear runs are short: the bar counts runs (full mode: SGD steps of a run)
            bar.start(len(zoo) * (len(protocol.grid()) + len(protocol.seeds)))
        for entry in zoo:
            try:
                if linear is None:
                    build = full(entry, train, test, protocol, device, bar)
                else:
                    build = linear(entry)
                acc, best = _tune(entry, train, protocol, log, build, report, bar, task)
                report.accuracy[entry.name], report.chosen[entry.name] = acc, best
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one broken model is reported; the others go on
                report.failures[entry.name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return report


def check_splits(train: Dataset, test: Dataset) -> None:
    """Refuse a train/test pair that cannot give a ground truth (different classes, or the same images)."""
    if train.classes != test.classes:
        raise InputError(
            f"train and test classes differ ({len(train.classes)} vs {len(test.classes)}); "
            "both splits must hold the same class folders"
        )
    if train.fingerprint == test.fingerprint:
        raise InputError(
            f"train and test of {train.name!r} are the same images; give a dataset with train/ and test/ "
            "folders (or two different datasets)"
        )


def timed_run(
    run: Runner,
    train: Dataset,
    entry: ModelEntry,
    protocol: Protocol,
    hyper: dict[str, float],
    stage: str,
    seed: int,
    *,
    task: dict[str, str] | None = None,
    score_name: str = "accuracy",
) -> tuple[str, dict[str, Any]]:
    """One run: its run-log key and the record to append (score, measure, seconds, the runner's extras).
    ``task`` joins the run's key (the regression targets' fingerprint); ``score_name`` names the score."""
    config = {**protocol.run_config(hyper, stage=stage, seed=seed), **(task or {})}
    t0 = time.perf_counter()
    acc, measure, extra = run(hyper, stage, seed)
    record = {
        "dataset": train.name,
        "model": entry.name,
        **config,
        score_name: acc,
        "measure": measure,
        "seconds": round(time.perf_counter() - t0, 2),
        **extra,
    }
    return RunLog.key(train, entry, config), record


def run_one(
    entry: ModelEntry,
    train: Dataset,
    test: Dataset,
    protocol: Protocol,
    hyper: dict[str, float],
    stage: str,
    seed: int,
    *,
    store: FeatureStore | None,
    device: str,
) -> tuple[str, dict[str, Any]]:
    """One run of one model on its own (what a Ray task does): prepare the model's data, run, and return the
    run-log key and record for the caller to append."""
    quiet = StepProgress(False)
    if protocol.mode == "linear":
        build = _linear_runner([entry], train, test, protocol, store, device, quiet)(entry)
    else:
        build = full_runner(entry, train, test, protocol, device, quiet)
    return timed_run(build(), train, entry, protocol, hyper, stage, seed)


def best_config(grid: list[dict[str, float]], val: Sequence[float]) -> dict[str, float]:
    """The grid point with the best validation accuracy; the grid is sorted by lr then wd (or C), and
    argmax keeps the first, so ties go to the smaller value."""
    return grid[int(np.argmax(val))]


def _tune(
    entry: ModelEntry,
    train: Dataset,
    protocol: Protocol,
    log: RunLog,
    build: Callable[[], Runner],
    report: FinetuneReport,
    bar: StepProgress,
    task: dict[str, str],
) -> tuple[float, dict[str, float]]:
    """Grid on the validation split, then the final retrain(s) on all of train, scored on test.

    ``build`` prepares the model's data (decoded images, cached features) and is called only when a run
    is not already in the log. ``task`` joins the run's key (the regression targets' fingerprint)."""
    run: Runner | None = None

    def result(hyper: dict[str, float], stage: str, seed: int) -> float:
        nonlocal run
        key = RunLog.key(train, entry, {**protocol.run_config(hyper, stage=stage, seed=seed), **task})
        if protocol.mode == "linear":
            bar.advance()
        if (rec := log.get(key)) is not None:
            report.runs_cached += 1
            return rec[report.score_name]
        if run is None:
            run = build()
        bar.describe(f"{entry.name} {stage} " + " ".join(f"{k}={v:g}" for k, v in hyper.items()))
        key, record = timed_run(
            run, train, entry, protocol, hyper, stage, seed, task=task, score_name=report.score_name
        )
        log.append(key, record)
        report.runs_done += 1
        return record[report.score_name]

    grid = protocol.grid()
    first = protocol.seeds[0]
    val = [result(h, "val", first) for h in grid]
    best = best_config(grid, val)
    test_acc = [result(best, "test", s) for s in protocol.seeds]
    return float(np.mean(test_acc)), best


def _linear_runner(
    zoo: Sequence[ModelEntry],
    train: Dataset,
    test: Dataset,
    protocol: Protocol,
    store: FeatureStore | None,
    device: str,
    bar: StepProgress,
) -> Callable[[ModelEntry], Callable[[], Runner]]:
    """Features of every model on both splits come from the cache (extracted once, for the whole zoo)."""
    store = store if store is not None else FeatureStore()
    cached: dict[str, Any] = {}

    def features() -> dict[str, Any]:
        if not cached:
            for split, ds in (("train", train), ("test", test)):
                bar.describe(f"features of {len(zoo)} model(s) on {split} (cached or extracted)")
                rep = extract(list(zoo), ds, store=store, device=device, progress=False)
                cached[split] = rep
        return cached

    def for_entry(entry: ModelEntry) -> Callable[[], Runner]:
        def run(hyper: dict[str, float], stage: str, seed: int) -> tuple[float, str, dict[str, Any]]:
            reps = features()
            for split in ("train", "test"):
                if entry.name not in reps[split].features:
                    why = reps[split].failures.get(entry.name, "not extracted")
                    raise RuntimeError(f"no {split} features: {why}")
            tr, te = reps["train"].features[entry.name], reps["test"].features[entry.name]
            Xtr, ytr = np.asarray(tr.features), np.asarray(tr.labels)
            if stage == "val":
                fit, ev = split_validation(ytr, protocol.val_fraction, seed)
                acc, measure = linear_probe_accuracy(Xtr[fit], ytr[fit], Xtr[ev], ytr[ev], C=hyper["C"])
            else:
                acc, measure = linear_probe_accuracy(
                    Xtr, ytr, np.asarray(te.features), np.asarray(te.labels), C=hyper["C"]
                )
            return acc, measure, {}

        return lambda: run

    return for_entry


def write_ground_truth(reports: Sequence[FinetuneReport], path: str | Path, *, comment: str = "") -> Path:
    """Write the ``dataset,model,accuracy`` CSV (accuracy in %) that ``rank --ground-truth`` reads, merging
    with rows already in ``path`` for other (dataset, model) pairs. Written to a temporary file, renamed."""
    path = Path(path)
    rows: dict[tuple[str, str], float] = {}
    if path.is_file():
        from transfersel.agreement import read_ground_truth

        for ds, models in read_ground_truth(path).accuracy.items():
            for m, a in models.items():
                rows[(ds, m)] = a
    for rep in reports:
        for m, a in rep.accuracy.items():
            rows[(rep.dataset, m)] = a
    lines = [f"# {line}" for line in comment.splitlines() if line.strip()]
    lines.append("dataset,model,accuracy")
    lines += [f"{ds},{m},{a:.2f}" for (ds, m), a in rows.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _check_regression(targets: RegressionTargets, train: Dataset, test: Dataset, protocol: Protocol) -> None:
    if protocol.mode != "full":
        raise InputError("regression targets are fine-tuned in full mode only; use Protocol(mode='full')")
    if protocol.augment:
        raise InputError(
            "random-resized-crop augmentation rescales the images, so it would corrupt a scale target; "
            "use Protocol(augment=False) (--no-augment) with regression targets"
        )
    if (len(targets.train), len(targets.test)) != (len(train), len(test)):
        raise InputError(
            f"regression targets have {len(targets.train)}/{len(targets.test)} rows for {len(train)}/"
            f"{len(test)} train/test images; give one row per image"
        )
