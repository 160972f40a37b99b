"""The model-running commands on an :class:`~transfersel.executor.Executor`: extraction and fine-tuning.

``local`` calls :func:`transfersel.extract.extract` / :func:`transfersel.finetune.finetune` as they are.
``ray`` runs one task per unit of work and returns the same reports:

* extraction: one task per (model, dataset, split) not yet cached; the worker writes the cache entry the
  way the local path does (temporary folder, then rename), so a killed worker leaves no torn entry and its
  retry starts over. The cache folder must be on storage every node sees.
* fine-tuning: one task per run. A model's grid runs go out together; once they are all known, its final
  runs (one per seed) go out. Workers return records; this process alone appends them to the run log,
  so a rerun skips what finished.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.data import Dataset
from transfersel.errors import InputError, TransferabilityWarning
from transfersel.executor import Executor, Failed, TaskPool, worker_device
from transfersel.extract import ExtractReport, extract
from transfersel.finetune import (
    FinetuneReport,
    Protocol,
    RunLog,
    best_config,
    check_splits,
    finetune,
    run_one,
)
from transfersel.store import FeatureStore
from transfersel.zoo import ModelEntry

__all__ = ["extract_on", "finetune_on"]


def extract_on(
    executor: Executor | None,
    zoo: list[ModelEntry],
    dataset: Dataset,
    *,
    store: FeatureStore | None = None,
    device: str = "auto",
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    **options: Any,
) -> ExtractReport:
    """:func:`transfersel.extract.extract` on ``executor`` (None: local); ``options`` are its batch_size,
    workers, amp and force. ``shard`` (splitting by hand) is for the local executor only."""
    if executor is None or not executor.is_ray:
        return extract(zoo, dataset, store=store, device=device, progress=progress, shard=shard, **options)
    if shard is not None:
        raise InputError("--shard splits the zoo by hand; with --executor ray leave it out (Ray schedules)")
    t0 = time.perf_counter()
    store = store if store is not None else FeatureStore()
    report = ExtractReport({}, {}, 0.0)
    with TaskPool(executor, device=device, title=f"extracting {dataset.name}", progress=progress) as pool:
        for e in zoo:
            hit = None if options.get("force") else store.get(dataset, e)
            if hit is not None:
                report.features[e.name] = hit
            else:  # absent or damaged: the task's extract() says which
                pool.submit(e.name, _extract_task, e, dataset, store.root, worker_device(device), options)
        for name, outcome in pool.results():
            if isinstance(outcome, Failed):
                report.failures[name] = outcome.reason
                continue
            _merge_extract(report, name, outcome, store, dataset, zoo)
    report.features = {e.name: report.features[e.name] for e in zoo if e.name in report.features}
    report.extracted = [e.name for e in zoo if e.name in report.extracted]
    report.seconds = time.perf_counter() - t0
    return report


def _extract_task(
    entry: ModelEntry, dataset: Dataset, root: Path, device: str, options: dict[str, Any]
) -> ExtractReport:
    """In the worker: the local extraction of one model; the features stay in the cache (not sent back)."""
    rep = extract([entry], dataset, store=FeatureStore(root), device=device, progress=False, **options)
    rep.features = {}
    return rep


def _merge_extract(
    report: ExtractReport,
    name: str,
    part: ExtractReport,
    store: FeatureStore,
    dataset: Dataset,
    zoo: list[ModelEntry],
) -> None:
    for model, damage in part.damaged.items():
        warnings.warn(
            f"cache entry of {model} was damaged ({damage}); recomputed it",
            TransferabilityWarning,
            stacklevel=3,
        )
    report.damaged.update(part.damaged)
    report.skipped.update(part.skipped)
    report.images += part.images
    if name in part.failures:
        report.failures[name] = part.failures[name]
        return
    entry = next(e for e in zoo if e.name == name)
    hit = store.get(dataset, entry)
    if hit is None:
        report.failures[name] = (
            f"its cache entry is missing after extraction; is {store.root} shared by all nodes?"
        )
        return
    report.features[name] = hit
    report.extracted += part.extracted


@dataclass
class _ModelRuns:
    """One model's progress through the protocol on the driver: grid accuracies, then final accuracies."""

    entry: ModelEntry
    val: dict[int, float] = field(default_factory=dict)  # grid index -> validation accuracy
    test: dict[int, float] = field(default_factory=dict)  # seed -> test accuracy
    best: dict[str, float] | None = None


def finetune_on(
    executor: Executor | None,
    zoo: Sequence[ModelEntry],
    train: Dataset,
    test: Dataset,
    *,
    protocol: Protocol | None = None,
    log: RunLog | str | Path,
    store: FeatureStore | None = None,
    device: str = "auto",
    progress: bool = True,
) -> FinetuneReport:
    """:func:`transfersel.finetune.finetune` on ``executor`` (None: local): the same report and run log."""
    if executor is None or not executor.is_ray:
        return finetune(
            zoo, train, test, protocol=protocol, log=log, store=store, device=device, progress=progress
        )
    protocol = protocol or Protocol()
    log = log if isinstance(log, RunLog) else RunLog(log)
    check_splits(train, test)
    report = FinetuneReport(train.name, protocol.mode)
    grid, first = protocol.grid(), protocol.seeds[0]
    models = {e.name: _ModelRuns(e) for e in zoo}
    title = f"fine-tuning on {train.name}"
    with TaskPool(executor, device=device, title=title, progress=progress) as pool:

        def run(m: _ModelRuns, hyper: dict[str, float], stage: str, seed: int) -> None:
            """Take the run from the log, or send it out; once a model's stage is complete, move on."""
            key = RunLog.key(train, m.entry, protocol.run_config(hyper, stage=stage, seed=seed))
            if (rec := log.get(key)) is None:
                args = (m.entry, train, test, protocol, hyper, stage, seed)
                pool.submit(m.entry.name, run_one, *args, store=store, device=worker_device(device))
                return
            report.runs_cached += 1
            record(m, rec, stage, hyper, seed)

        def record(
            m: _ModelRuns, rec: dict[str, Any], stage: str, hyper: dict[str, float], seed: int
        ) -> None:
            if stage == "val":
                m.val[grid.index(hyper)] = rec["accuracy"]
                if len(m.val) == len(grid):
                    m.best = best_config(grid, [m.val[i] for i in range(len(grid))])
                    for s in protocol.seeds:
                        run(m, m.best, "test", s)
            else:
                m.test[seed] = rec["accuracy"]
                if len(m.test) == len(protocol.seeds):
                    report.accuracy[m.entry.name] = float(np.mean([m.test[s] for s in protocol.seeds]))
                    report.chosen[m.entry.name] = m.best or {}

        for m in models.values():
            for hyper in grid:
                run(m, hyper, "val", first)
        for name, outcome in pool.results():
            m = models[name]
            if isinstance(outcome, Failed):
                report.failures.setdefault(name, outcome.reason)
                continue
            key, rec = outcome
            log.append(key, rec)
            report.runs_done += 1
            if name not in report.failures:
                hyper = {k: rec[k] for k in grid[0]}
                record(m, rec, rec["stage"], hyper, rec["seed"])
    order = [e.name for e in zoo]
    report.accuracy = {n: report.accuracy[n] for n in order if n in report.accuracy}
    report.chosen = {n: report.chosen[n] for n in order if n in report.chosen}
    return report
