#!/usr/bin/env python3
"""Fine-tuning ground truth CSV from its run log, and the run-to-run noise of re-run records.

Per (dataset, model): the mean test accuracy over the final-retrain seeds, from the last record per run key
whose dataset fingerprint is the current one (the latest fingerprint logged for that dataset name). Records
under an older fingerprint of the same dataset (a previous session) that match a current record in
(dataset, model, stage, lr, seed) measure the run-to-run noise; it is printed.

usage: python scripts/gt_from_runs.py RUNS.jsonl OUT.csv [--header-from OLD.csv] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def read_runs(runs: Path) -> tuple[list[dict], list[dict]]:
    """``(current, older)``: the last record per run key, split by whether its dataset fingerprint is the
    latest one logged for that dataset name (``older``: a previous session's, e.g. before shared/ was laid
    again). Each record gets ``_fp``, its dataset fingerprint."""
    last: dict[str, dict] = {}
    latest: dict[str, str] = {}
    for line in runs.read_text().splitlines():
        r = json.loads(line)
        r["_fp"] = json.loads(r["key"])["dataset"]
        last[r["key"]] = r
        latest[r["dataset"]] = r["_fp"]
    current = [r for r in last.values() if r["_fp"] == latest[r["dataset"]]]
    older = [r for r in last.values() if r["_fp"] != latest[r["dataset"]]]
    return current, older


def final_test_accuracy(
    current: list[dict], seeds: Sequence[int] | None = None
) -> dict[tuple[str, str], dict[int, float]]:
    """``{(dataset, model): {seed: test accuracy %}}`` of the final retrains (with a seed in ``seeds``, or
    every seed when None)."""
    acc: dict[tuple[str, str], dict[int, float]] = {}
    for r in current:
        if r["stage"] == "test" and (seeds is None or r["seed"] in seeds):
            acc.setdefault((r["dataset"], r["model"]), {})[r["seed"]] = float(r["accuracy"])
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--header-from", type=Path, help="copy its leading # lines")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    fresh, older = read_runs(args.runs)
    acc = final_test_accuracy(fresh, args.seeds)
    missing = [k for k, v in acc.items() if len(v) != len(args.seeds)]
    if missing:
        raise SystemExit(
            f"{len(missing)} (dataset, model) pairs lack a seed, e.g. {missing[0]}; wait for the run"
        )
    header = []
    if args.header_from is not None:
        header = [ln for ln in args.header_from.read_text().splitlines() if ln.startswith("#")]
    rows = [f"{d},{m},{np.mean(list(v.values())):.2f}" for (d, m), v in sorted(acc.items())]
    args.out.write_text("\n".join([*header, "dataset,model,accuracy", *rows]) + "\n")
    print(f"{args.out}: {len(rows)} rows")
    new = {(r["dataset"], r["model"], r["stage"], r["lr"], r["seed"]): r["accuracy"] for r in fresh}
    diffs = [
        abs(float(r["accuracy"]) - float(new[k]))
        for r in older
        if (k := (r["dataset"], r["model"], r["stage"], r["lr"], r["seed"])) in new
    ]
    if diffs:
        d = np.array(diffs)
        nz = d[d > 1e-9]
        print(
            f"re-run records: {len(d)}; differ: {len(nz)}; |diff| of those: min {nz.min():.2f}, median "
            f"{np.median(nz):.2f}, mean {nz.mean():.2f}, max {nz.max():.2f} points"
            if len(nz)
            else f"re-run records: {len(d)}; none differ"
        )


if __name__ == "__main__":
    main()
