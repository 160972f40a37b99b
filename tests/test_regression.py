"""The regression task of the offline benchmark (issue 12) on real data: the task generator, the metrics on
real-valued targets, and the caption (text-target) path with the packaged MiniLM.

Data: ``scripts/make_regression_task.py`` on the shared sign_digits photos; features of three small shared-zoo
models (LeNet-5, the CIFAR-10 ResNet-20 and its untrained control) extracted by ``rank``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import socket
import sys

import numpy as np
import pytest
from conftest import REPO, SHARED

from transfersel.data import open_dataset
from transfersel.errors import InputError
from transfersel.metrics import check_inputs
from transfersel.metrics._regression import r2_per_target
from transfersel.metrics.emms import emms_from_targets
from transfersel.metrics.knn_reg import knn_reg_from_targets
from transfersel.metrics.ridge import ridge_from_targets
from transfersel.rank import rank
from transfersel.regression import RegressionTargets
from transfersel.targets import LabelTargets, logme_flabel, read_text_targets, text_embeddings_for

sys.path.insert(0, str(REPO / "scripts"))
from make_regression_task import ANGLE_RANGE, SCALE_RANGE, caption, make_task  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # real images and models: `pytest -m "not slow"` skips this file
    pytest.mark.filterwarnings("ignore:emms. N ≤ D"),  # LeNet-5: D = 500 ≥ N = 120, EMMS saturates
]

SIGNS = SHARED / "datasets" / "sign_digits"
ZOO = SHARED / "zoo" / "zoo.yaml"
MODELS = ["lenet5_mnist", "resnet20_cifar10", "resnet20_random_init"]
PER_SAMPLE = ["logme", "emms", "ridge", "knn_reg"]
RUN_LOG = REPO / "benchmarks" / "offline" / "gt_regression.runs.jsonl"
# sha256 of the benchmark task's targets CSVs (default arguments: 100 train / 200 test per class, seed 0);
# benchmarks/offline/REGRESSION.md quotes them
TRAIN_SHA256 = "03492197e0ccfc3311d30981eeed6c26244ca2fcb03054818b6d3882aef04215"
TEST_SHA256 = "ecb80b19f762a970c3e1a635dd7c4f9fdaab15b45d89dd741767b7420b6d16bb"


def _rows(path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 12-per-class task (120 train, 20 test images) and a feature cache for ``MODELS``."""
    root = tmp_path_factory.mktemp("regression")
    make_task(SIGNS, root / "task", train_per_class=12, test_per_class=2)
    return root / "task", root / "cache"


def _rank(task, cache, targets: LabelTargets, metrics=PER_SAMPLE, reduce=None):
    where = {"models": ZOO, "only": MODELS, "cache": cache, "device": "cpu"}
    return rank(task, metrics=metrics, label_targets=targets, reduce=reduce, **where)


def _numeric(csv_path, columns=("angle", "scale")) -> LabelTargets:
    return LabelTargets(csv=csv_path, columns=columns, key_column="path", regression=True)


def _features(task, cache) -> dict[str, np.ndarray]:
    """The cached train features of ``MODELS`` (extracted by an earlier ``rank`` or now)."""
    from transfersel.extract import extract
    from transfersel.store import FeatureStore
    from transfersel.zoo import load_zoo

    ds = open_dataset(task, split="train")
    rep = extract(load_zoo(ZOO, only=MODELS), ds, store=FeatureStore(cache), device="cpu", progress=False)
    return {m: np.asarray(f.features) for m, f in rep.features.items()}


def test_task_generator_is_deterministic_and_matches_the_logged_ground_truth(tmp_path):
    """The benchmark's task has the pinned label checksums, the targets fingerprint of every fine-tuning
    run in the committed log, and a subset run gives the same bytes twice and the same values per file."""
    sums = make_task(SIGNS, tmp_path / "full")
    assert sums == {"train": TRAIN_SHA256, "test": TEST_SHA256}
    for split, digest in sums.items():
        assert hashlib.sha256((tmp_path / "full" / f"{split}_targets.csv").read_bytes()).hexdigest() == digest
    train, test = (open_dataset(tmp_path / "full", split=s) for s in ("train", "test"))
    assert (len(train), len(test)) == (1000, 619)  # the offline benchmark's sizes: 100/class, all of test
    targets = RegressionTargets.from_csv(
        train,
        test,
        tmp_path / "full/train_targets.csv",
        tmp_path / "full/test_targets.csv",
        ("angle", "scale"),
    )
    logged = {json.loads(line)["targets"] for line in RUN_LOG.read_text().splitlines()}
    assert logged == {targets.fingerprint}
    lo, hi = targets.train.min(axis=0), targets.train.max(axis=0)
    assert ANGLE_RANGE[0] <= lo[0] < -40 and 40 < hi[0] <= ANGLE_RANGE[1]
    assert SCALE_RANGE[0] <= lo[1] < 0.62 and 0.98 < hi[1] <= SCALE_RANGE[1]

    a, b = (make_task(SIGNS, tmp_path / n, train_per_class=2, test_per_class=1) for n in ("a", "b"))
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 + 20 + 10
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    full = _rows(tmp_path / "full/train_targets.csv")
    for path, row in _rows(tmp_path / "a/train_targets.csv").items():
        assert row == full[path]
        assert row["caption"] == caption(float(row["angle"]), float(row["scale"]))


def test_regression_metrics_invariant_to_an_affine_change_of_the_target(small):
    """ridge, knn_reg and EMMS standardise each target column, R² is invariant to one affine change of
    both arguments; LogME regresses on the raw column (spec §2.3), so only the `rank --regression` path,
    which standardises the CSV columns, makes it invariant."""
    task, cache = small
    feats = _features(task, cache)
    T = np.array([[float(r["angle"]), float(r["scale"])] for r in _rows(task / "train_targets.csv").values()])
    assert T.shape == (120, 2)
    a, b = np.array([np.pi / 180, -100.0]), np.array([3.0, 50.0])  # degrees -> radians + 3; -percent + 50
    for m, X in feats.items():
        for fn, rtol in (
            (ridge_from_targets, 1e-10),
            (knn_reg_from_targets, 1e-12),
            (emms_from_targets, 1e-6),
        ):
            np.testing.assert_allclose(fn(X, T * a + b), fn(X, T), rtol=rtol, err_msg=f"{m} {fn.__name__}")
        scales = np.random.default_rng(0).uniform(0.1, 10, X.shape[1])  # ridge standardises features too
        np.testing.assert_allclose(ridge_from_targets(X * scales, T), ridge_from_targets(X, T), rtol=1e-8)
        np.testing.assert_allclose(knn_reg_from_targets(X * 7.5, T), knn_reg_from_targets(X, T), rtol=1e-12)
        assert abs(logme_flabel(X, T + 50.0) - logme_flabel(X, T)) > 1e-3  # raw targets: not invariant
    pred = T + np.random.default_rng(1).normal(0, [10, 0.1], T.shape)
    np.testing.assert_allclose(r2_per_target(pred * a + b, T * a + b), r2_per_target(pred, T), rtol=1e-12)

    # the command-line path: the same targets in other units give the same scores for every metric
    rows = list(_rows(task / "train_targets.csv").values())
    moved = task.parent / "moved.csv"
    with open(moved, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "angle", "scale"])
        w.writerows(
            [r["path"], float(r["angle"]) * a[0] + b[0], float(r["scale"]) * a[1] + b[1]] for r in rows
        )
    before = _rank(task, cache, _numeric(task / "train_targets.csv"))
    after = _rank(task, cache, _numeric(moved))
    moved_scores = {r.model: r.scores for r in after.rows}
    for r in before.rows:
        for m in PER_SAMPLE:
            assert moved_scores[r.model][m] == pytest.approx(r.scores[m], rel=1e-9, abs=1e-12), (r.model, m)
    ridge = {r.model: r.scores["ridge"] for r in before.rows}
    assert ridge["resnet20_cifar10"] > 0.2 and ridge["lenet5_mnist"] > 0.2  # angle/scale are in the features


def test_caption_targets_run_offline_with_minilm(small, monkeypatch):
    """`rank` on the captions ("a hand sign rotated by 30 degrees ...") embeds them with the packaged MiniLM
    with every network connection refused, and scores what the per-sample metrics give on those embeddings."""

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    task, cache = small
    targets = LabelTargets(
        csv=task / "train_targets.csv", columns=("caption",), key_column="path", embedders=("minilm",)
    )
    board = _rank(task, cache, targets)
    assert board.refused == () and set(board.metrics) >= set(PER_SAMPLE)
    keys = open_dataset(task, split="train").relpaths()
    texts = read_text_targets(task / "train_targets.csv", "caption", key_column="path", keys=keys)
    E = text_embeddings_for(texts, ["minilm"], cache=cache)
    assert E.shape == (1, 120, 384) and len(set(texts)) > 100  # per-image captions, not class prompts
    feats = _features(task, cache)
    for r in board.rows:
        X = feats[r.model]
        assert r.scores["emms"] == pytest.approx(emms_from_targets(X, E), rel=1e-9)
        assert r.scores["logme"] == pytest.approx(logme_flabel(X, E, variant="padded"), rel=1e-9)
        assert r.scores["ridge"] == pytest.approx(ridge_from_targets(X, E), rel=1e-9)
        assert r.scores["knn_reg"] == pytest.approx(knn_reg_from_targets(X, E), rel=1e-9)
    # the captions carry the numbers: the angle is predictable from the caption embeddings
    angle = np.array([[float(_rows(task / "train_targets.csv")[k]["angle"])] for k in keys])
    assert ridge_from_targets(E[0], angle) > 0.5


def test_per_sample_targets_refuse_class_label_metrics(small):
    """With numeric targets a classification-only metric is refused (it would score the digit folders);
    `auto`, whose components all need class labels, is refused by name, and without -m the default is every
    metric with a per-sample form, said in one note."""
    task, cache = small
    targets = _numeric(task / "train_targets.csv")
    board = _rank(task, cache, targets, metrics=["ridge", "sfda", "hscore_reg"])
    assert board.metrics[0] == "ridge" and "sfda" not in board.metrics and "hscore_reg" not in board.metrics
    assert len(board.refused) == 2 and all("class labels only" in why for why in board.refused)
    with pytest.raises(InputError, match="auto cannot run on per-sample targets"):
        _rank(task, cache, targets, metrics=["auto"])
    default = _rank(task, cache, targets, metrics=[])
    assert default.metrics[:4] == ("logme", "ridge", "knn_reg", "emms") and not default.refused
    assert sum(n.startswith("auto scores class labels only") for n in default.notes) == 1


def test_per_sample_metrics_score_the_reduced_features(small):
    """`reduce` projects the features of the D×D metrics (EMMS, LogME) on per-sample targets as it does on
    class labels; the notice then says what was scored."""
    task, cache = small
    feats = _features(task, cache)
    numeric = _numeric(task / "train_targets.csv")
    T = numeric.build(task, split="train")[1]
    board = _rank(task, cache, numeric, ["emms", "logme", "ridge"])
    reduced = _rank(task, cache, numeric, ["emms", "logme", "ridge"], reduce=16)
    labels = open_dataset(task, split="train").labels
    exact = {r.model: r.scores for r in board.rows}
    for r1 in reduced.rows:
        r0 = exact[r1.model]
        Z = check_inputs(feats[r1.model], labels).reduced(16).X
        assert Z.shape == (120, 16)
        assert r1.scores["emms"] == pytest.approx(emms_from_targets(Z, T), rel=1e-9)
        assert r1.scores["logme"] == pytest.approx(logme_flabel(Z, T, variant="padded"), rel=1e-9)
        assert r1.scores["emms"] != pytest.approx(r0["emms"], rel=1e-3)
        assert r1.scores["ridge"] == r0["ridge"]  # not a D×D metric: never projected
    assert any("reduce 16" in n or "d = 16" in n for n in reduced.notes), reduced.notes


def test_ground_truth_is_replayed_from_the_committed_run_log(tmp_path):
    """The fine-tuning ground truth of REGRESSION.md: every model's grid and retrains are in the log, the
    retrained lr is the grid's best, gt_regression.csv holds their mean; a lost run is named, never filled."""
    import regression_report as rr
    from benchmark_regression import REGRESSION

    from transfersel.agreement import read_ground_truth
    from transfersel.zoo import load_zoo

    names = [e.name for e in load_zoo(ZOO)]
    lines = RUN_LOG.read_text().splitlines()
    (fp,) = {json.loads(line)["targets"] for line in lines}
    gt, missing, fps = rr.logged_ground_truth(RUN_LOG, names, REGRESSION, "regression_task", fp)
    assert missing == [] and sorted(gt) == sorted(names) and len(names) == 18
    assert sum(fps["dataset"].values()) == len(lines) == 18 * 6
    for g in gt.values():
        assert g.chosen == REGRESSION.grid()[int(np.argmax(g.val))] and sorted(g.test) == [0, 1, 2]
        assert 0.75 < g.r2 < 1 and set(g.per_target) == {"angle", "scale"}
    committed = read_ground_truth(REPO / "benchmarks" / "offline" / "gt_regression.csv").accuracy
    assert committed["regression_task"] == {m: round(g.r2, 4) for m, g in gt.items()}

    drop = next(i for i, line in enumerate(lines) if json.loads(line)["stage"] == "test")
    (tmp_path / "log.jsonl").write_text("\n".join(lines[:drop] + lines[drop + 1 :]) + "\n")
    lost = json.loads(lines[drop])
    gt2, missing2, _ = rr.logged_ground_truth(
        tmp_path / "log.jsonl", names, REGRESSION, "regression_task", fp
    )
    assert len(missing2) == 1 and missing2[0].startswith(f"{lost['model']} test")
    assert lost["model"] not in gt2 and len(gt2) == 17
    _, missing3, _ = rr.logged_ground_truth(RUN_LOG, names, REGRESSION, "regression_task", "0" * 16)
    assert len(missing3) == 18 * len(REGRESSION.grid())  # other targets: no run of this log counts
