#!/usr/bin/env python3
"""Fit the ``reduce="auto"`` rule's ``fraction`` leave one dataset out (selection spec §2, §5).

``d*(N, D, C) = min(D, N − 1, max(C, ⌊fraction·(N − C)⌋))``. Grid fixed in advance: ``FRACTIONS`` and
"none" (the exact features). Every reducible metric is scored on the cached train features at every grid
value -> ``benchmarks/offline/reduce_components.csv`` (``metric@f<fraction>``; resumable). For each held-out
dataset the grid value maximising the mean τ_w over the reducible metrics on the other datasets is chosen
and the held-out τ_w per metric reported; the value fitted on all datasets goes into
``transfersel/selection.json`` → ``"reduce"`` (``fraction``, and ``default``: the setting ``rank`` uses
without ``--reduce``, "auto" when the held-out mean with the chosen fractions beats "none").

usage: python scripts/fit_reduce.py --ground-truth benchmarks/offline/gt_finetune.csv --cache-dir DIR
       [--datasets ...] [--scores-only] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from fit_auto import DATASETS, ROOT, SHARED, TRAIN_PER_CLASS, read_components, write_components

from transfersel.agreement import read_ground_truth, weighted_tau
from transfersel.data import open_dataset
from transfersel.metrics import check_inputs, list_metrics
from transfersel.metrics.auto import SELECTION_FILE, scores_from_inputs
from transfersel.store import FeatureStore
from transfersel.targets import LabelTargets, embeddings_for_labels
from transfersel.zoo import load_zoo

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)
GRID: tuple[float | str, ...] = (*FRACTIONS, "none")


def component(metric: str, f: float | str) -> str:
    return metric if f == "none" else f"{metric}@f{f}"


def dim_for(f: float, n: int, d: int, c: int) -> int:
    """The rule's d* for ``fraction=f`` (same formula as ``transfersel.metrics._reduce.auto_dim``)."""
    return int(max(1, min(d, n - 1, max(c, math.floor(f * (n - c))))))


def score(args: argparse.Namespace, path: Path, reducible: list[str]) -> dict:
    """Scores every ``metric@f<fraction>`` missing from ``path`` (exact-feature ones come from
    ``components.csv``)."""
    table = read_components(path)
    exact = read_components(args.out / "components.csv")
    zoo = load_zoo(args.out / "zoo_64px.yaml")
    store = FeatureStore(args.cache_dir)
    for name in args.datasets:
        have = table.setdefault(name, {})
        for m in reducible:
            have[m] = exact[name][m]
        todo = [
            f for f in FRACTIONS if any(len(have.get(component(m, f), {})) != len(zoo) for m in reducible)
        ]
        if not todo:
            continue
        t0 = time.perf_counter()
        folder = SHARED / "datasets" / name
        ds = open_dataset(folder, split="train", max_per_class=TRAIN_PER_CLASS, seed=0)
        targets = LabelTargets(embedders=("minilm",), template="a photo of a {}.")
        E, _ = targets.build(folder, split="train", max_per_class=TRAIN_PER_CLASS, seed=0)
        for entry in zoo:
            cf = store.get(ds, entry)
            inputs = check_inputs(
                cf.features, cf.labels, label_embeddings=embeddings_for_labels(E, cf.labels)
            )
            for f in todo:
                k = dim_for(f, inputs.N, inputs.D, inputs.C)
                got = scores_from_inputs(inputs, [f"{m}@{k}" for m in reducible])
                for m in reducible:
                    have.setdefault(component(m, f), {})[entry.name] = got.get(f"{m}@{k}", math.nan)
        write_components(path, table)
        print(f"{name}: fractions {todo} in {time.perf_counter() - t0:.0f} s", flush=True)
    return table


def taus(table: dict, gt, datasets: list[str], reducible: list[str]) -> dict:
    """``[grid value][metric][dataset]`` τ_w against the ground truth."""
    out: dict = {}
    for f in GRID:
        for m in reducible:
            for d in datasets:
                models = list(gt.accuracy[d])
                s = [table[d][component(m, f)][m2] for m2 in models]
                out.setdefault(f, {}).setdefault(m, {})[d] = weighted_tau(s, gt.for_models(d, models))
    return out


def mean_over(tau: dict, f, metrics: list[str], datasets: list[str]) -> float:
    return float(np.mean([tau[f][m][d] for m in metrics for d in datasets]))


def report(tau: dict, datasets: list[str], reducible: list[str], picks: dict, final, default: str) -> str:
    head = "| reduce | " + " | ".join(reducible) + " | mean |"
    sep = "|---|" + "---:|" * (len(reducible) + 1)
    lines = [
        "## The reduce rule's fraction, fitted leave one dataset out",
        "",
        "Made by `python scripts/fit_reduce.py` (scores in `reduce_components.csv`). "
        "`d* = min(D, N − 1, max(C, ⌊fraction·(N − C)⌋))`; grid fixed in advance: fraction in "
        f"{', '.join(map(str, FRACTIONS))} or none (exact features). For each held-out dataset the grid "
        "value with the highest mean τ_w over the reducible metrics on the other datasets is chosen.",
        "",
        "Mean τ_w over all datasets per grid value (in hindsight):",
        "",
        head,
        sep,
    ]
    for f in GRID:
        cells = [f"{np.mean([tau[f][m][d] for d in datasets]):.3f}" for m in reducible]
        lines.append(f"| {f} | " + " | ".join(cells) + f" | {mean_over(tau, f, reducible, datasets):.3f} |")
    lines += [
        "",
        "Held out (the grid value chosen on the other datasets):",
        "",
        head.replace("reduce", "held out (chosen)"),
        sep,
    ]
    for d in datasets:
        f = picks[d]
        cells = [f"{tau[f][m][d]:.3f}" for m in reducible]
        lines.append(
            f"| {d} ({f}) | " + " | ".join(cells) + f" | {np.mean([tau[f][m][d] for m in reducible]):.3f} |"
        )
    held = {m: np.mean([tau[picks[d]][m][d] for d in datasets]) for m in reducible}
    none = {m: np.mean([tau["none"][m][d] for d in datasets]) for m in reducible}
    lines.append(
        "| **mean held out** | "
        + " | ".join(f"**{held[m]:.3f}**" for m in reducible)
        + f" | **{np.mean(list(held.values())):.3f}** |"
    )
    lines.append(
        "| mean with none | "
        + " | ".join(f"{none[m]:.3f}" for m in reducible)
        + f" | {np.mean(list(none.values())):.3f} |"
    )
    lines += [
        "",
        f"Final (fitted on all {len(datasets)} datasets): fraction = {final}; default for `rank` "
        f"without `--reduce`: `{default}`.",
        "`auto` (above) is unaffected: its `metric@auto` candidates were scored with the fraction in "
        "`selection.json` when `components.csv` was made (0.1, the same as `@f0.1` here); rescore them "
        "(`fit_auto.py --rescore`) to see them at the new fraction.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ground-truth", type=Path)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".transfersel-cache")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "offline")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--scores-only", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    reducible = [m.name for m in list_metrics() if m.reducible]
    path = args.out / "reduce_components.csv"
    table = score(args, path, reducible)
    if args.scores_only:
        return
    gt = read_ground_truth(args.ground_truth)
    datasets = [d for d in DATASETS if d in gt.accuracy and d in table]
    tau = taus(table, gt, datasets, reducible)

    def best(on: list[str]):
        return max(GRID, key=lambda f: (round(mean_over(tau, f, reducible, on), 6), f == "none"))

    picks = {d: best([o for o in datasets if o != d]) for d in datasets}
    final = best(datasets)
    held = np.mean([tau[picks[d]][m][d] for d in datasets for m in reducible])
    default = "auto" if held > mean_over(tau, "none", reducible, datasets) and final != "none" else "none"
    text = report(tau, datasets, reducible, picks, final, default)
    print(text)
    if args.no_write:
        return
    doc = json.loads(SELECTION_FILE.read_text())
    rule = doc["reduce"]
    if final != "none":
        rule["fraction"] = final
    rule["default"] = default
    rule["why"] = (
        f"fitted leave one dataset out on {', '.join(datasets)}: held-out mean tau_w over {len(reducible)} "
        f"metrics {held:.3f} vs {mean_over(tau, 'none', reducible, datasets):.3f} unreduced"
    )
    rule["refit"] = f"python scripts/fit_reduce.py --ground-truth {args.ground_truth} --cache-dir DIR"
    SELECTION_FILE.write_text(json.dumps(doc, indent=1) + "\n")
    marker = "## The reduce rule's fraction"
    auto_md = args.out / "AUTO.md"
    old = auto_md.read_text().split(marker)[0].rstrip() + "\n\n" if auto_md.is_file() else ""
    auto_md.write_text(old + text)


if __name__ == "__main__":
    main()
