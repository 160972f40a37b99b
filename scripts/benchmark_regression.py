#!/usr/bin/env python3
"""The offline benchmark's regression task: rotation angle and scale of sign_digits hands (issue 12).

Phases (each resumes from what is cached or logged):

  finetune   full fine-tuning ground truth, MSE head, test R²      -> gt_regression.runs.jsonl
  features   extract the 18 models on the task's train and test    -> --cache-dir
  ridge      ridge-probe ground truth on the cached features        -> gt_regression_ridge.csv
  score      every metric with a regression form, numeric and caption targets -> regression_scores.csv
  report     ground truths, tau_w / rel@1 / regret@1 with bootstrap sd, plot -> REGRESSION.md (+ .png),
             and the fine-tuning ground truth as a CSV                -> gt_regression.csv
  all        the task (made when missing), then features, ridge, score and report (not finetune: the
             ground truth is read from the run log)

The task is made first by ``scripts/make_regression_task.py`` (default folder below). The zoo and the protocol
are those of ``scripts/benchmark_offline.py`` (18 models, inputs <= 64 px; lr grid {1e-2, 3e-3, 1e-3} on a
stratified 20 % of train, 80 steps, the chosen lr retrained 160 steps with seeds 0, 1, 2, batch 16, gradient
clipped at 5, zero-initialised head) except that random-resized-crop augmentation is off: it rescales the
image, so it would change the scale target without changing the label.

usage: python scripts/benchmark_regression.py --phase all|finetune|features|ridge|score|report [--models a,b]
       [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
from benchmark_offline import FULL, ROOT, zoo_64px  # noqa: I001  (scripts/ is on sys.path when run)

from transfersel.agreement import weighted_tau
from transfersel.data import open_dataset
from transfersel.extract import extract
from transfersel.finetune import finetune, protocol_summary
from transfersel.metrics._regression import r2_per_target, target_matrix
from transfersel.metrics.ridge import ALPHA_FACTORS, ridge_from_targets
from transfersel.priors import PRIORS
from transfersel.probe import ridge_probe_r2, split_validation
from transfersel.rank import rank
from transfersel.regression import RegressionTargets
from transfersel.store import FeatureStore
from transfersel.targets import LabelTargets, read_text_targets, text_embeddings_for
from transfersel.zoo import ModelEntry, load_zoo

TASK = Path("~/.cache/transfersel/regression_task").expanduser()
CACHE = Path("/work/cache-reg")
TARGET_COLUMNS = ("angle", "scale")
REGRESSION = dataclasses.replace(FULL, augment=False)
OUT = ROOT / "benchmarks" / "offline"
# the metrics with a form for real-valued per-sample targets (transfersel.targets.per_sample_metric); the
# priors come with every zoo ranking. The others are classification-only (see NOT_APPLICABLE in the report).
SCORED = ("logme", "emms", "ridge", "knn_reg")
REDUCED = ("logme", "emms")  # the D×D ones: also scored on features projected by --reduce auto ("@auto")


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


def phase_features(zoo, task: Path, cache: Path) -> None:
    train, test, _ = task_splits(task)
    for ds in (train, test):
        rep = extract(zoo, ds, store=FeatureStore(cache), device="cpu", batch_size=64, progress=False)
        print(f"{ds.split}: {len(ds)} images, {len(rep.extracted)} extracted in {rep.seconds:.0f} s")
        for m, why in rep.failures.items():
            print(f"  FAILED {m}: {why}", file=sys.stderr)


def phase_ridge(zoo, task: Path, cache: Path, out: Path) -> None:
    """Ridge-probe ground truth: α chosen on the fine-tuning's stratified 20 % validation split (seed 0) by
    the mean R², refitted on all of train, test R² per target."""
    train, test, targets = task_splits(task)
    store = FeatureStore(cache)
    reps = [extract(zoo, ds, store=store, device="cpu", progress=False) for ds in (train, test)]
    fit, val = split_validation(train.labels, REGRESSION.val_fraction, REGRESSION.seeds[0])
    lines = [
        f"# ridge probe on cached features: alpha in {len(fit)}*{list(ALPHA_FACTORS)} chosen on the 20 % "
        "validation split by mean R², refitted on train; r2 = mean test R² over angle, scale",
        "dataset,model,r2," + ",".join(f"r2_{n}" for n in targets.names) + ",alpha",
    ]
    for entry in zoo:
        if entry.name not in reps[0].features or entry.name not in reps[1].features:
            print(f"  no features for {entry.name}", file=sys.stderr)
            continue
        Xtr = np.asarray(reps[0].features[entry.name].features)
        Xte = np.asarray(reps[1].features[entry.name].features)
        alphas = tuple(f * len(fit) for f in ALPHA_FACTORS)
        val_r2 = ridge_probe_r2(Xtr[fit], targets.train[fit], Xtr[val], targets.train[val], alphas=alphas)
        best = int(np.argmax(val_r2.mean(axis=1)))  # ascending α: ties keep the weaker penalty
        alpha = ALPHA_FACTORS[best] * len(Xtr)
        r2 = ridge_probe_r2(Xtr, targets.train, Xte, targets.test, alphas=(alpha,))[0]
        lines.append(
            f"{train.name},{entry.name},{r2.mean():.4f}," + ",".join(f"{v:.4f}" for v in r2) + f",{alpha:g}"
        )
        print(lines[-1], flush=True)
    (out / "gt_regression_ridge.csv").write_text("\n".join(lines) + "\n")


def target_kinds(task: Path) -> dict[str, LabelTargets]:
    """The numeric targets (standardised angle and scale, no embedder) and the captions (MiniLM)."""
    csv = task / "train_targets.csv"
    return {
        "numeric": LabelTargets(csv=csv, columns=TARGET_COLUMNS, key_column="path", regression=True),
        "caption": LabelTargets(csv=csv, columns=("caption",), key_column="path", embedders=("minilm",)),
    }


def phase_score(zoo_path: Path, task: Path, cache: Path, out: Path) -> None:
    """Every metric with a per-sample-target form, and the priors, on the train features: numeric and
    caption targets -> regression_scores.csv (targets,model,metric,score,seconds)."""
    lines = ["targets,model,metric,score,seconds"]
    for kind, label_targets in target_kinds(task).items():
        for reduce, metrics, suffix in ((None, SCORED, ""), ("auto", REDUCED, "@auto")):
            t0 = time.perf_counter()
            board = rank(
                task,
                models=zoo_path,
                metrics=list(metrics),
                cache=cache,
                device="cpu",
                label_targets=label_targets,
                reduce=reduce,
            )
            took = time.perf_counter() - t0
            print(
                f"{kind}, reduce {reduce}: {len(board.metrics)} scores x {len(board.rows)} models in "
                f"{took:.0f} s"
            )
            lines += [
                f"{kind},{r.model},{m}{suffix},{r.scores[m]!r},{r.seconds.get(m, 0.0):.3f}"
                for m in board.metrics
                if suffix == "" or m in metrics  # the priors once
                for r in board.rows
            ]
            for note in board.notes:
                print(f"  note: {note}")
    (out / "regression_scores.csv").write_text("\n".join(lines) + "\n")


def phase_report(zoo: list[ModelEntry], task: Path, cache: Path, out: Path) -> None:
    """REGRESSION.md from the run log, gt_regression_ridge.csv and regression_scores.csv (no model runs)."""
    import regression_report as rr

    train, test, targets = task_splits(task)
    log = out / "gt_regression.runs.jsonl"
    models = [e.name for e in zoo]
    gt, missing, fps = rr.logged_ground_truth(log, models, REGRESSION, train.name, targets.fingerprint)
    if missing:
        sys.exit(
            f"{len(missing)} runs are not in {log.name}, e.g. {missing[0]}; run --phase finetune for them"
        )
    ridge = rr.read_ridge(out / "gt_regression_ridge.csv")
    scores = rr.read_scores(out / "regression_scores.csv")
    truths = {
        "fine-tuning": {m: gt[m].r2 for m in models},
        "the ridge probe": {m: ridge[m]["r2"] for m in models},
    }
    metrics = [*SCORED, *(f"{m}@auto" for m in REDUCED)]
    priors = [p for p in PRIORS if p in scores["numeric"]]
    by_gt = {name: rr.agreement(scores, truth) for name, truth in truths.items()}
    ceiling = rr.seed_ceiling(gt)
    between = weighted_tau(list(truths["the ridge probe"].values()), list(truths["fine-tuning"].values()))
    paths = {
        m: weighted_tau([scores["caption"][m][x] for x in models], [scores["numeric"][m][x] for x in models])
        for m in metrics
    }
    rr.plot(scores, truths, metrics, out / "regression.png")
    keys = train.relpaths()
    captions = read_text_targets(task / "train_targets.csv", "caption", key_column="path", keys=keys)
    E = text_embeddings_for(captions, ["minilm"], cache=cache)[0]
    caption_r2 = {n: ridge_from_targets(E, targets.train[:, [i]]) for i, n in enumerate(targets.names)}
    T, A = target_matrix(E, len(E)), np.c_[np.ones(len(E)), targets.train]  # least squares on the numbers
    caption_share = float(r2_per_target(A @ np.linalg.lstsq(A, T, rcond=None)[0], T).mean())
    lines = [
        f"# {train.name},model,accuracy = test R² after full fine-tuning (mean of seeds "
        f"{', '.join(map(str, REGRESSION.seeds))}), read from {log.name} by benchmark_regression.py "
        "--phase report",
        "dataset,model,accuracy",
        *(f"{train.name},{m},{gt[m].r2:.4f}" for m in models),
    ]
    (out / "gt_regression.csv").write_text("\n".join(lines) + "\n")
    digests = {
        n: hashlib.sha256((task / f"{n}_targets.csv").read_bytes()).hexdigest() for n in ("train", "test")
    }
    ev = rr.Evidence(by_gt, metrics, priors, ceiling, between, paths, caption_r2, caption_share)
    doc = rr.document(
        ev,
        train=train,
        test=test,
        targets=targets,
        gt=gt,
        ridge=ridge,
        fingerprints=fps,
        weights={e.name: e.fingerprint() for e in zoo},
        digests=digests,
        protocol=protocol_summary(REGRESSION),
    )
    (out / "REGRESSION.md").write_text(doc)
    print(f"wrote {out / 'REGRESSION.md'}, {out / 'regression.png'}, {out / 'gt_regression.csv'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--phase", required=True, choices=("all", "finetune", "features", "ridge", "score", "report")
    )
    ap.add_argument("--task", type=Path, default=TASK)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache-dir", type=Path, default=CACHE)
    ap.add_argument("--models", help="comma-separated subset of the zoo (finetune: split across processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    zoo = load_zoo(zoo_64px(args.out))
    models = args.models.split(",") if args.models else None
    if args.phase == "finetune":
        phase_finetune(zoo, args.task, args.out, models)
    if args.phase == "all" and not (args.task / "test_targets.csv").is_file():
        from make_regression_task import SHARED as DATA_ROOT
        from make_regression_task import make_task

        make_task(DATA_ROOT / "datasets" / "sign_digits", args.task)
    if args.phase in ("all", "features"):
        phase_features(zoo, args.task, args.cache_dir)
    if args.phase in ("all", "ridge"):
        phase_ridge(zoo, args.task, args.cache_dir, args.out)
    if args.phase in ("all", "score"):
        phase_score(args.out / "zoo_64px.yaml", args.task, args.cache_dir, args.out)
    if args.phase in ("all", "report"):
        phase_report(zoo, args.task, args.cache_dir, args.out)


if __name__ == "__main__":
    main()
