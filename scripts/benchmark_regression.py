#!/usr/bin/env python3
"""The offline benchmark's regression task: rotation angle and scale of sign_digits hands (issue 12).

Phases (each resumes from what is cached or logged):

  finetune   full fine-tuning ground truth, MSE head, test R²      -> gt_regression.runs.jsonl
  features   extract the 18 models on the task's train and test    -> --cache-dir
  ridge      ridge-probe ground truth on the cached features        -> gt_regression_ridge.csv
  score      every metric with a regression form, numeric and caption targets -> regression_scores.csv
  report     ground truths, tau_w / rel@1 / regret@1 with bootstrap sd, plot -> REGRESSION.md

The task is made first by ``scripts/make_regression_task.py`` (default folder below). The zoo and the protocol
are those of ``scripts/benchmark_offline.py`` (18 models, inputs <= 64 px; lr grid {1e-2, 3e-3, 1e-3} on a
stratified 20 % of train, 80 steps, the chosen lr retrained 160 steps with seeds 0, 1, 2, batch 16, gradient
clipped at 5, zero-initialised head) except that random-resized-crop augmentation is off: it rescales the
image, so it would change the scale target without changing the label.

usage: python scripts/benchmark_regression.py --phase finetune [--models a,b] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from benchmark_offline import FULL, ROOT, zoo_64px  # noqa: I001  (scripts/ is on sys.path when run)

from transfersel.data import open_dataset
from transfersel.finetune import finetune
from transfersel.regression import RegressionTargets
from transfersel.zoo import load_zoo

TASK = Path("~/.cache/transfersel/regression_task").expanduser()
TARGET_COLUMNS = ("angle", "scale")
REGRESSION = dataclasses.replace(FULL, augment=False)
OUT = ROOT / "benchmarks" / "offline"


def task_splits(task: Path):
    train = open_dataset(task, split="train")
    test = open_dataset(task, split="test")
    targets = RegressionTargets.from_csv(
        train, test, task / "train_targets.csv", task / "test_targets.csv", TARGET_COLUMNS
    )
    return train, test, targets


def phase_finetune(zoo, task: Path, out: Path, models: list[str] | None) -> None:
    train, test, targets = task_splits(task)
    by_name = {e.name: e for e in zoo}
    unknown = sorted(set(models or ()) - set(by_name))
    if unknown:
        sys.exit(f"--models: not in the zoo: {', '.join(unknown)}")
    chosen = list(zoo) if models is None else [by_name[m] for m in models]  # in the order given
    for entry in chosen:  # one model per call: its result is printed as soon as it is done
        t0 = time.perf_counter()
        rep = finetune(
            [entry],
            train,
            test,
            protocol=REGRESSION,
            log=out / "gt_regression.runs.jsonl",
            device="cpu",
            targets=targets,
            progress=False,
        )
        for m, r2 in rep.accuracy.items():
            print(
                f"{m}: test R² {r2:.4f} ({rep.runs_done} runs in {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        for m, why in rep.failures.items():
            print(f"FAILED {m}: {why}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", required=True, choices=("finetune", "features", "ridge", "score", "report"))
    ap.add_argument("--task", type=Path, default=TASK)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".transfersel-cache")
    ap.add_argument("--models", help="comma-separated subset of the zoo (finetune: split across processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    zoo = load_zoo(zoo_64px(args.out))
    models = args.models.split(",") if args.models else None
    if args.phase == "finetune":
        phase_finetune(zoo, args.task, args.out, models)


if __name__ == "__main__":
    main()
