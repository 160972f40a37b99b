"""The report of the regression benchmark (``benchmark_regression.py --phase report``): ground truths,
agreement of every metric with them, the figure and the findings, written to ``REGRESSION.md``.

The fine-tuning ground truth is replayed from the run log: for each model the protocol's grid is looked up
(seed 0, validation R²), the best learning rate chosen as :func:`transfersel.finetune.best_config` does, and
its final retrains (one per seed) read, so the test R² is the mean over the retrain seeds of the runs the
protocol would have chosen. Runs are matched by dataset name, model name and run configuration (targets
fingerprint included) but not by the dataset and weight fingerprints of the key: those changed from
(size, mtime) to content digests after the log was written, while the task is regenerated bit for bit.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gt_from_runs import read_runs

from transfersel.agreement import Correlation, correlate, minmax, weighted_tau
from transfersel.data import Dataset
from transfersel.finetune import Protocol, best_config
from transfersel.priors import PRIORS
from transfersel.regression import RegressionTargets
from transfersel.report import ScatterPanel, plot_scatter

# why each metric without a per-sample-target form is not scored (transfersel.targets.per_sample_metric)
NOT_APPLICABLE = {
    "sfda": "Fisher discriminant of the classes (class means and within-class scatter)",
    "hscore": "cov(E[X|y]) over the classes; spec §2.7 defines no continuous-target form",
    "hscore_reg": "the same class-mean covariance with a shrunk cov(X); spec §2.7 gives no regression form",
    "gbc": "Bhattacharyya overlap of class pairs",
    "transrate": "coding rate minus its class-conditional average",
    "nleep": "p(y | mixture component) from class counts",
    "leep": "joint of the source head and the target classes",
    "nce": "conditional entropy of the target classes given the source head",
    "knn": "leave-one-out class accuracy (its regression form is knn_reg)",
    "linear": "logistic-regression accuracy (its regression form is ridge)",
    "parc": "RDM of one-hot labels; no per-sample-target form is defined",
    "ncti": "pool metric on class compactness and LDA class probabilities",
    "etran": "pool metric on LDA class probabilities and energy",
    "auto": "no regression mode: every component (transrate@32, leep, hscore_reg, gbc) needs class labels",
}


@dataclass(frozen=True)
class FineTuned:
    """One model's logged fine-tuning: validation R² per grid point, the chosen point, test R² per seed and
    the per-target test R² (mean over seeds)."""

    val: tuple[float, ...]
    chosen: dict[str, float]
    test: dict[int, float]
    per_target: dict[str, float]

    @property
    def r2(self) -> float:
        return float(np.mean(list(self.test.values())))


def logged_ground_truth(
    log: Path, models: Sequence[str], protocol: Protocol, dataset: str, targets_fp: str
) -> tuple[dict[str, FineTuned], list[str], dict[str, dict]]:
    """``(per model, missing runs, fingerprints)``, replayed from the run log; ``fingerprints["dataset"]``
    counts the records per logged dataset fingerprint, ``fingerprints["model"][name]`` is the set of weight
    fingerprints logged for a model."""
    current, older = read_runs(log)
    runs: dict[tuple[str, str, str], dict] = {}
    fingerprints: dict[str, dict] = {"dataset": {}, "model": {}}
    for r in [*older, *current]:  # a record under the latest fingerprint wins over an older one of its run
        key = json.loads(r["key"])
        fingerprints["dataset"][r["_fp"]] = fingerprints["dataset"].get(r["_fp"], 0) + 1
        fingerprints["model"].setdefault(r["model"], set()).add(key["model"])
        config = {k: v for k, v in key.items() if k not in ("dataset", "model")}
        runs[(r["dataset"], r["model"], json.dumps(config, sort_keys=True))] = r

    def record(model: str, hyper: dict[str, float], stage: str, seed: int) -> dict | None:
        config = {**protocol.run_config(hyper, stage=stage, seed=seed), "targets": targets_fp}
        return runs.get((dataset, model, json.dumps(config, sort_keys=True)))

    out, missing = {}, []
    grid = protocol.grid()
    for m in models:
        val = [record(m, h, "val", protocol.seeds[0]) for h in grid]
        if any(r is None for r in val):
            missing += [f"{m} val {h}" for h, r in zip(grid, val, strict=True) if r is None]
            continue
        best = best_config(grid, [r["r2"] for r in val])
        test = {s: record(m, best, "test", s) for s in protocol.seeds}
        if any(r is None for r in test.values()):
            missing += [f"{m} test {best} seed {s}" for s, r in test.items() if r is None]
            continue
        names = list(next(iter(test.values()))["r2_per_target"])
        per_target = {n: float(np.mean([r["r2_per_target"][n] for r in test.values()])) for n in names}
        out[m] = FineTuned(
            tuple(r["r2"] for r in val), best, {s: float(r["r2"]) for s, r in test.items()}, per_target
        )
    return out, missing, fingerprints


def seed_ceiling(gt: Mapping[str, FineTuned]) -> float:
    """Mean over seed pairs of τ_w between two seeds' test R² over the models: how well one fine-tuning run
    ranks the models of another (a selector cannot be expected to beat it)."""
    seeds = sorted(next(iter(gt.values())).test)
    models = list(gt)
    pairs = itertools.combinations(seeds, 2)
    return float(
        np.mean(
            [weighted_tau([gt[m].test[i] for m in models], [gt[m].test[j] for m in models]) for i, j in pairs]
        )
    )


def read_ridge(path: Path) -> dict[str, dict[str, float]]:
    """``{model: {"r2": mean, "r2_<target>": ..., "alpha": ...}}`` from ``gt_regression_ridge.csv``."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    return {
        r["model"]: {k: float(v) for k, v in r.items() if k not in ("dataset", "model")}
        for r in csv.DictReader(lines)
    }


def read_scores(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{targets kind: {metric: {model: score}}}`` from ``regression_scores.csv``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["targets"], {}).setdefault(r["metric"], {})[r["model"]] = float(r["score"])
    return out


def agreement(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]], truth: Mapping[str, float], n_boot: int = 1000
) -> dict[tuple[str, str], Correlation]:
    """``{(kind, metric): Correlation}`` against one ground truth; priors once (they ignore the targets)."""
    models = list(truth)
    acc = [truth[m] for m in models]
    out = {}
    for kind, per_metric in scores.items():
        for metric, per_model in per_metric.items():
            if metric in PRIORS and kind != "numeric":
                continue
            s = [per_model[m] for m in models]
            out[(kind, metric)] = correlate("regression_task", metric, models, s, acc, n_boot=n_boot)
    return out


def _cell(c: Correlation | None) -> str:
    if c is None:
        return "– | – | – | –"
    return f"{c.weighted_tau:+.3f} ± {c.tau_sd:.3f} | {c.rel_at_1:.3f} | {c.regret_at_1:.4f} | {c.top1}"


def agreement_table(rows: Mapping[tuple[str, str], Correlation], metrics: Sequence[str]) -> str:
    head = (
        "| metric | numeric: τ_w ± sd | rel@1 | regret@1 | top-1 pick | caption: τ_w ± sd | rel@1 | regret@1 "
        "| top-1 pick |"
    )
    lines = [head, "|---|" + "---:|---:|---:|---|" * 2]
    for m in metrics:
        if ("numeric", m) in rows:
            lines.append(f"| {m} | {_cell(rows.get(('numeric', m)))} | {_cell(rows.get(('caption', m)))} |")
    return "\n".join(lines)


def plot(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]],
    truths: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    path: Path,
) -> Path:
    """Score (min-max over the zoo) vs each ground truth, numeric and caption targets: 4 panels."""
    panels = []
    for gt_name, truth in truths.items():
        models = tuple(truth)
        for kind in ("numeric", "caption"):
            series = tuple(
                (m, tuple(float(v) for v in minmax([scores[kind][m][x] for x in models])))
                for m in metrics
                if m in scores.get(kind, {})
            )
            panels.append(
                ScatterPanel(f"{kind} targets vs {gt_name}", models, tuple(truth[x] for x in models), series)
            )
    return plot_scatter(
        panels, path, xlabel="score (min-max over the 18 models)", ylabel="test R²", title="regression task"
    )


# ----------------------------------------------------------------------------------------------------------
# Findings: sentences from the numbers by fixed rules (stated in them), so a rerun cannot contradict them

MIN_TIE = 3  # a group of this many models with one exact score: a saturated regime (spec: "near its limit")


def tied(rows: Mapping[tuple[str, str], Correlation]) -> dict[tuple[str, str], tuple[str, ...]]:
    """``{(kind, metric): the largest group of models with one exact score}`` where it has ≥ MIN_TIE."""
    out = {}
    for key, c in rows.items():
        groups = [g for g in c.ties if len(g) >= MIN_TIE]
        if groups:
            out[key] = max(groups, key=len)
    return out


def _best(rows: Mapping[tuple[str, str], Correlation], kind: str, names: Sequence[str]) -> Correlation:
    return max((rows[(kind, m)] for m in names if (kind, m) in rows), key=lambda c: c.weighted_tau)


def _summary(c: Correlation) -> str:
    return (
        f"{c.metric} (τ_w {c.weighted_tau:+.3f} ± {c.tau_sd:.3f}, picks {c.top1}: rel@1 {c.rel_at_1:.3f}, "
        f"regret@1 {c.regret_at_1:.4f})"
    )


def _against(
    name: str, rows: Mapping[tuple[str, str], Correlation], metrics: Sequence[str], priors: Sequence[str]
) -> tuple[str, Correlation, bool]:
    """The finding for one ground truth, its best informative metric and whether that beats every prior."""
    sat = tied(rows)
    informative = [m for m in metrics if ("numeric", m) not in sat]
    best, prior = _best(rows, "numeric", informative), _best(rows, "numeric", priors)
    beats = best.weighted_tau - prior.weighted_tau > best.tau_sd
    text = f"**Against {name}** the best metric on the numeric targets is {_summary(best)}. "
    for (kind, m), group in sat.items():
        c = rows[(kind, m)]
        if kind == "numeric" and m in metrics:
            text += (
                f"{m} ties {len(group)} of {c.n_models} models at one score (a saturated regime), so its τ_w "
                f"{c.weighted_tau:+.3f} measures the tie, not the targets, and it is not counted "
                f"(rule: a tie of ≥ {MIN_TIE} models). "
            )
    text += f"The best target-free prior is {_summary(prior)}: the best metric " + (
        "beats it by more than one sd." if beats else "does **not** beat it by more than one sd."
    )
    return text, best, beats


@dataclass(frozen=True)
class Evidence:
    """What the findings are drawn from. ``by_gt``: the agreement rows per ground truth (fine-tuning, then
    the ridge probe); ``between``: τ_w of the ridge probe against fine-tuning; ``paths``: per metric, τ_w
    between its caption and numeric scores; ``caption_r2``: per target, the leave-one-out ridge R² from the
    caption embeddings to the number; ``caption_share``: the share of the standardised caption embeddings'
    variance that is linear in the numbers (what the metrics score of them)."""

    by_gt: Mapping[str, Mapping[tuple[str, str], Correlation]]
    metrics: Sequence[str]
    priors: Sequence[str]
    ceiling: float
    between: float
    paths: Mapping[str, float]
    caption_r2: Mapping[str, float]
    caption_share: float


def findings(ev: Evidence) -> list[str]:
    """Plain-word findings, one paragraph each."""
    (ft_name, ft), (probe_name, probe) = ev.by_gt.items()
    ft_text, ft_best, ft_beats = _against(ft_name, ft, ev.metrics, ev.priors)
    probe_text, probe_best, _ = _against(probe_name, probe, ev.metrics, ev.priors)
    out = [ft_text, probe_text]
    out.append(
        f"**Ceiling and second ground truth.** One fine-tuning seed ranks the models of another with τ_w "
        f"{ev.ceiling:.3f} (mean over seed pairs). The ridge probe on frozen features ranks them against "
        f"fine-tuning with τ_w {ev.between:+.3f}"
        + (
            ": the cheap ground truth is a fair stand-in for fine-tuning here."
            if ev.between >= 0.5
            else ": on this task the frozen features' linear read-out of angle and scale does not predict "
            "what full fine-tuning reaches, so the two tables answer different questions."
        )
    )
    use = (
        f"{ft_best.metric} ({ft_best.weighted_tau:+.3f}), the best against fine-tuning"
        if ft_beats
        else f"no metric: none predicts full fine-tuning better than the best target-free prior (the least "
        f"bad is {ft_best.metric}, {ft_best.weighted_tau:+.3f})"
    )
    out.append(
        f"**Which metric to use for regression here.** To pick a model to fine-tune fully: {use}. To pick "
        f"frozen features for a linear head: {probe_best.metric} ({probe_best.weighted_tau:+.3f} against the "
        "ridge probe"
        + (
            "; the metric is a leave-one-out version of that probe, so partly by construction"
            if probe_best.metric == "ridge"
            else ""
        )
        + "). Chosen in hindsight on one task of 18 models; no held-out task."
    )
    words = {
        m: "agree" if t >= 0.8 else "partly agree" if t >= 0.4 else "do not agree"
        for m, t in ev.paths.items()
    }
    sat = {m for kind, m in tied(ft)}
    detail = "; ".join(
        f"{m} {t:+.3f} ({words[m]}{', both saturated' if m in sat else ''})" for m, t in ev.paths.items()
    )
    numbers = ", ".join(f"{n} {v:.3f}" for n, v in ev.caption_r2.items())
    encoded = (
        "The caption embeddings (MiniLM) encode the numbers (leave-one-out ridge R² from them to "
        f"{numbers}), but only {ev.caption_share:.0%} of their standardised variance, which the metrics "
        "regress on, is linear in the two numbers"
    )
    differ = all(words[m] != "agree" for m in ev.paths if m not in sat)
    out.append(
        "**Caption (text-target) path vs numeric path** (τ_w between a metric's caption scores and its "
        f"numeric scores; ≥ 0.8 agree, ≥ 0.4 partly): {detail}. {encoded}. The text-target path runs end to "
        "end offline"
        + (
            ", but every metric that does not saturate ranks the models differently on the captions than on "
            "the numbers: it is not a substitute for numeric targets here."
            if differ
            else "."
        )
    )
    return out


# ----------------------------------------------------------------------------------------------------------
# REGRESSION.md

COMMAND = "python scripts/benchmark_regression.py --phase all"
TITLE = "# Regression benchmark: rotation angle and scale of the sign_digits hands (issue 12)"


def _ties(rows: Mapping[tuple[str, str], Correlation]) -> list[str]:
    return [
        f"- {metric} ({kind}): {len(g)} models share one score ({', '.join(g[:3])}, …)"
        for (kind, metric), c in rows.items()
        for g in c.ties
        if len(g) > 2
    ]


def document(
    ev: Evidence,
    *,
    train: Dataset,
    test: Dataset,
    targets: RegressionTargets,
    gt: Mapping[str, FineTuned],
    ridge: Mapping[str, Mapping[str, float]],
    fingerprints: Mapping[str, dict],
    weights: Mapping[str, str],
    digests: Mapping[str, str],
    protocol: str,
) -> str:
    """The whole REGRESSION.md (every section generated). ``weights``: each model's current weight
    fingerprint; ``digests``: sha256 of each split's targets CSV; ``ev``: what the findings are drawn from."""
    lo, hi = targets.train.min(axis=0), targets.train.max(axis=0)
    ranges = ", ".join(f"{n} in [{a:g}, {b:g}]" for n, a, b in zip(targets.names, lo, hi, strict=True))
    fps = ", ".join(f"`{fp[:12]}…` ({n} records)" for fp, n in fingerprints["dataset"].items())
    same_data = train.fingerprint in fingerprints["dataset"]
    same_weights = sum(weights[m] in fingerprints["model"].get(m, ()) for m in weights)
    keys = (
        f"**From the log.** {sum(fingerprints['dataset'].values())} records under dataset fingerprint(s) "
        f"{fps}; the regenerated train split's is `{train.fingerprint[:12]}…` "
        f"({'the same' if same_data else 'another'}), and {same_weights} of {len(weights)} models' weight "
        "fingerprints are the current ones."
    )
    if not same_data or same_weights < len(weights):
        keys += (
            " Both fingerprints became content digests (they were size + mtime) in commit 79912c8, after "
            "the log was written, so those run keys do not match and `--phase finetune` would redo the runs."
        )
    lrs = {m: g.chosen["lr"] for m, g in gt.items()}
    gt_rows = [
        "| model | fine-tuning R² (mean of seeds) | sd over seeds | lr | angle R² | scale R² "
        "| ridge-probe R² | ridge angle | ridge scale |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in sorted(gt, key=lambda x: -gt[x].r2):
        g, r = gt[m], ridge[m]
        gt_rows.append(
            f"| {m} | {g.r2:.4f} | {np.std(list(g.test.values()), ddof=1):.4f} | {lrs[m]:g} | "
            f"{g.per_target['angle']:.4f} | {g.per_target['scale']:.4f} | {r['r2']:.4f} | "
            f"{r['r2_angle']:.4f} | {r['r2_scale']:.4f} |"
        )
    sections = [
        TITLE,
        f"Generated by `{COMMAND}` (it makes the task when missing, extracts the features, fits the ridge "
        "probe, scores every metric and writes this file, `regression.png` and `gt_regression.csv`; about "
        "5 minutes from scratch on 2 shared CPU cores). The fine-tuning ground truth is **read from the run "
        "log** `gt_regression.runs.jsonl`, written in an earlier session by `--phase finetune`; it is not "
        "re-run.",
        "## Findings\n\n" + "\n\n".join(findings(ev)),
        "## Task\n\n"
        f"`scripts/make_regression_task.py`: each sign_digits photo scaled and rotated by known amounts; "
        f"train {len(train)} images (the offline benchmark's 100 per class), test {len(test)} (all of "
        f"test). Targets: {ranges}. Captions for the text-target path: "
        '"a hand sign rotated by 30 degrees and scaled to 80 percent".\n\n'
        f"- sha256 of `train_targets.csv` `{digests['train']}`, of `test_targets.csv` `{digests['test']}` "
        "(the labels' checksum, pinned in `tests/test_regression.py`)\n"
        f"- targets fingerprint (part of every run key) `{targets.fingerprint}`",
        "## Ground truth\n\n"
        f"Full fine-tuning, MSE head on the standardised targets, test R² (mean over angle and scale):\n\n"
        f"```\n{protocol}\n```\n\n"
        f"{keys} The report matches runs by dataset name, model name and run configuration, whose targets "
        "fingerprint equals the regenerated task's (the task is deterministic), replays the protocol (grid "
        "on seed 0, best learning rate, final retrains) and found every run. Ground truth = mean test R² of "
        "the retrain seeds.\n\n"
        f"**Seed-to-seed τ_w (the ceiling)**: {ev.ceiling:.3f}. **Ridge probe** (second, cheap ground "
        "truth): ridge on the cached train features, α chosen on the fine-tuning's 20 % validation split, "
        f"test R²; its τ_w against fine-tuning is {ev.between:+.3f}.\n\n" + "\n".join(gt_rows),
    ]
    for name, rows in ev.by_gt.items():
        sections.append(
            f"## Agreement with {name}\n\n"
            "τ_w = weighted Kendall τ (± bootstrap sd over models, 1000 resamples), rel@1 = R² of the "
            "top-1 pick / best R², regret@1 = best R² − R² of the pick. Numeric targets: the standardised "
            "angle and scale; caption: the MiniLM embeddings of the captions. `@auto`: features projected "
            "on their top-d principal axes (`--reduce auto`). Priors ignore the targets.\n\n"
            + agreement_table(rows, [*ev.metrics, *ev.priors])
        )
    ties = _ties(next(iter(ev.by_gt.values()))) + [
        f"- {metric}: no value for {len(c.nan_models)} models (ranked last)"
        for (kind, metric), c in next(iter(ev.by_gt.values())).items()
        if c.nan_models
    ]
    sections.append(
        "## Ties and missing scores\n\nGroups of models with one exact score (zoo order breaks them in "
        "rel@1; for a metric, a saturated regime: N − 1 ≤ D for EMMS):\n\n" + "\n".join(ties or ["- none"])
    )
    sections.append(
        "## Caption path vs numeric path\n\n| metric | τ_w(caption scores, numeric scores) |\n|---|---:|\n"
        + "\n".join(f"| {m} | {t:+.3f} |" for m, t in ev.paths.items())
    )
    sections.append(
        "## Not applicable (classification-only)\n\n`rank` refuses them with per-sample targets: they would "
        "score the digit folders.\n\n| metric | why |\n|---|---|\n"
        + "\n".join(f"| {m} | {why} |" for m, why in NOT_APPLICABLE.items())
    )
    sections.append("## Figure\n\n![score vs test R²](regression.png)")
    return "\n\n".join(sections) + "\n"
