"""rank --confidence: resampled rankings on real features (shared-zoo CIFAR ResNets, shared CIFAR-10 images).

The features are test_rank's (12 train images per class, a direct TorchScript forward pass); subsets of the
models, fewer samples per class, or one model's features under a second name are copied into a temp folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from test_rank import MODELS, PER_CLASS, feature_dir  # noqa: F401  (the module-scoped fixture)
from typer.testing import CliRunner

from transfersel.cli import app
from transfersel.confidence import Resampling, draw_rows, resample, summarise
from transfersel.errors import InputError
from transfersel.features import ModelFeatures, load_feature_dir
from transfersel.metrics import get_metric
from transfersel.rank import rank

TRAINED, RANDOM = "resnet20_cifar10", "resnet20_random_init"
FEW = Resampling(draws=8)


def _copy(src: Path, dst: Path, models: dict[str, str], *, per_class: dict[int, int] | None = None) -> Path:
    """cifar10 features of ``src`` in ``dst``: ``{new name: source model}``, the first ``per_class[c]``
    samples of class c (all of a class not listed)."""
    dst.mkdir()
    for name, source in models.items():
        mf = load_feature_dir(src, "cifar10", models=[source])[0]
        y = np.asarray(mf.labels)
        keep = np.concatenate([np.flatnonzero(y == c)[: (per_class or {}).get(c)] for c in np.unique(y)])
        np.save(dst / f"{name}_cifar10_feature.npy", np.asarray(mf.features)[keep])
        np.save(dst / f"{name}_cifar10_label.npy", y[keep])
        np.save(dst / f"{name}_cifar10_logits.npy", np.asarray(mf.logits)[keep])
    return dst


def _cli(*args: object, width: int = 80):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)}, terminal_width=width)


def test_draws_are_seeded_stratified_subsamples_without_replacement():
    y = np.repeat(np.array([3, 7, 9]), [10, 5, 4])
    rows = draw_rows(y, Resampling(draws=6, seed=1))
    assert len(rows) == 6
    for r in rows:
        assert np.all(np.diff(r) > 0)  # ascending, no row twice (no bootstrap duplicates)
        assert [int(np.sum(y[r] == c)) for c in (3, 7, 9)] == [8, 4, 3]  # floor(0.8 n_c) of every class
    assert len({tuple(r) for r in rows}) == 6  # the draws differ
    again = draw_rows(y, Resampling(draws=6, seed=1))
    assert all(np.array_equal(a, b) for a, b in zip(rows, again, strict=True))  # seed (seed, b): reproducible
    other = draw_rows(y, Resampling(draws=6, seed=2))
    assert not all(np.array_equal(a, b) for a, b in zip(rows, other, strict=True))
    # draw b does not depend on how many draws there are
    assert np.array_equal(draw_rows(y, Resampling(draws=2, seed=1))[1], rows[1])


def test_a_draw_is_the_metric_on_its_rows_and_intervals_hold_the_full_score(feature_dir):  # noqa: F811
    board = rank("cifar10", features=feature_dir, metrics=["knn"], confidence=FEW)
    c = board.confidence
    assert c is not None and c.metric == "knn" and c.draws == 8 and c.fraction == 0.8 and c.seed == 0
    feats = load_feature_dir(feature_dir, "cifar10", models=list(MODELS))
    y = np.asarray(feats[0].labels)
    first = draw_rows(y, Resampling(draws=8, seed=0))[0]
    assert len(first) == 10 * math.floor(0.8 * PER_CLASS)
    for mf in feats:  # draw 0 of each model is knn scored on exactly the draw's rows
        expected = get_metric("knn")(np.asarray(mf.features)[first], y[first])
        assert c.draw_scores[mf.model][0] == pytest.approx(expected, abs=1e-12)
    for r in board.rows:
        assert c.lo[r.model] <= r.scores["knn"] <= c.hi[r.model], r.model
        assert c.lo[r.model] < c.hi[r.model]  # draws of 80 % of the samples do move kNN's accuracy
        raw = np.array(c.draw_scores[r.model])  # the interval is the raw spread stretched by sqrt(f/(1-f))
        width = 2.0 * (np.percentile(raw, 95) - np.percentile(raw, 5))
        assert c.hi[r.model] - c.lo[r.model] == pytest.approx(width, rel=1e-9)
    assert sum(c.p_top.values()) == pytest.approx(1.0)
    assert c.top == board.rows[0].model and board.rows[0].ranks["knn"] == 1
    # the same call again: the same draws, bit for bit; another seed: other draws
    assert rank("cifar10", features=feature_dir, metrics=["knn"], confidence=FEW).confidence == c
    other = rank("cifar10", features=feature_dir, metrics=["knn"], confidence=Resampling(draws=8, seed=5))
    assert other.confidence.draw_scores != c.draw_scores and other.confidence.seed == 5


@pytest.mark.parametrize("metric", ["knn", "auto"])
def test_a_clearly_best_model_is_always_first_and_the_random_init_is_not_within_noise(
    feature_dir,  # noqa: F811
    metric,
    tmp_path,
):
    board = rank("cifar10", features=feature_dir, metrics=[metric], confidence=True)
    c = board.confidence
    assert c.draws == 20 and sum(c.p_top.values()) == pytest.approx(1.0)
    assert c.p_top[RANDOM] == 0.0 and not c.within_noise[RANDOM]
    assert c.within_noise[c.top] and c.p_top[c.top] == max(c.p_top.values())
    assert c.hi[RANDOM] < c.lo[c.top]
    pair = _copy(feature_dir, tmp_path / "pair", {TRAINED: TRAINED, RANDOM: RANDOM})
    two = rank("cifar10", features=pair, metrics=[metric], confidence=True).confidence
    assert two.top == TRAINED and two.p_top == {TRAINED: 1.0, RANDOM: 0.0}
    assert two.within_noise == {TRAINED: True, RANDOM: False} and two.tied == [TRAINED]
    assert "is ahead of every other model" in two.note()


def test_the_same_features_under_two_names_are_within_noise_of_each_other(feature_dir, tmp_path):  # noqa: F811
    same = _copy(feature_dir, tmp_path / "same", {TRAINED: TRAINED, "twin": TRAINED, RANDOM: RANDOM})
    board = rank("cifar10", features=same, metrics=["knn"], confidence=FEW)
    c = board.confidence
    assert board.models[:2] == [TRAINED, "twin"] and c.top == TRAINED  # exactly one top: the first of the tie
    assert c.within_noise == {TRAINED: True, "twin": True, RANDOM: False}
    assert c.p_top[TRAINED] == c.p_top["twin"] == 0.5 and c.p_top[RANDOM] == 0.0  # every draw is a tie
    assert (c.lo[TRAINED], c.hi[TRAINED]) == (c.lo["twin"], c.hi["twin"])
    note = board.table().notes[-1]
    assert note.startswith("confidence: knn rescored on 8 draws of 80% of each class (without replacement")
    assert note.endswith("2 models within noise: fine-tune both, or label more data")


def test_resample_leaves_the_callers_arrays_alone(feature_dir):  # noqa: F811
    feats = []
    for mf in load_feature_dir(feature_dir, "cifar10", models=list(MODELS)):
        arrays = [np.array(a) for a in (mf.features, mf.labels, mf.logits)]
        for a in arrays:
            a.flags.writeable = False  # a write anywhere would raise
        feats.append(ModelFeatures(mf.model, *arrays))
    before = [np.array(f.features) for f in feats]
    board = rank("cifar10", features=feature_dir, metrics=["leep"])
    c = resample(board, feats, FEW)
    assert all(np.array_equal(f.features, b) for f, b in zip(feats, before, strict=True))
    assert c == rank("cifar10", features=feature_dir, metrics=["leep"], confidence=FEW).confidence


def test_within_noise_rule_and_ties_on_given_draws():
    full = [1.0, 0.9, 0.0, math.nan]
    # model b beats a in exactly 2 of 20 paired draws (10 %): within noise; c never; d is never scored
    draws = np.tile([1.0, 0.9, 0.0, math.nan], (20, 1))
    draws[:2, 1] = 1.2
    c = summarise("m", ["a", "b", "c", "d"], full, "a", draws, Resampling(draws=20))
    assert c.within_noise == {"a": True, "b": True, "c": False, "d": False}
    assert c.p_top == {"a": 0.9, "b": 0.1, "c": 0.0, "d": 0.0} and c.nan_draws["d"] == 20
    assert math.isnan(c.lo["d"]) and c.lo["c"] == c.hi["c"] == 0.0  # no spread: the full-data score
    draws[:2, 1] = 0.95  # now b never reaches a: separated
    c = summarise("m", ["a", "b", "c", "d"], full, "a", draws, Resampling(draws=20))
    assert not c.within_noise["b"] and c.p_top["a"] == 1.0
    # a stricter share needs more draws
    draws[:2, 1] = 1.2
    strict = summarise("m", list("abcd"), full, "a", draws, Resampling(draws=20, noise_share=0.15))
    assert not strict.within_noise["b"]
    # equal full scores and equal draws tie in every draw: each tie splits its first place
    rng = np.random.default_rng(0)
    same = np.repeat(rng.normal(size=(20, 1)), 2, axis=1)
    tied = summarise("m", ["a", "b", "c"], [1.0, 1.0, 0.0], "a", np.c_[same, same[:, :1] - 5], Resampling())
    assert tied.p_top == {"a": 0.5, "b": 0.5, "c": 0.0} and tied.within_noise["b"]
    # the spread is stretched by sqrt(f / (1 - f)) around the full-data score
    wide = summarise(
        "m", ["a", "b", "c"], [1.0, 1.0, 0.0], "a", np.c_[same, same[:, :1]], Resampling(fraction=0.5)
    )
    assert wide.hi["a"] - wide.lo["a"] == pytest.approx(np.ptp(np.percentile(same[:, 0], [5, 95])))
    assert tied.hi["a"] - tied.lo["a"] == pytest.approx(2 * (wide.hi["a"] - wide.lo["a"]))


def test_cli_shows_p_top_and_the_mark_in_80_columns_and_writes_the_intervals(feature_dir, tmp_path):  # noqa: F811
    same = _copy(feature_dir, tmp_path / "same", {TRAINED: TRAINED, "twin": TRAINED, RANDOM: RANDOM})
    outs = [tmp_path / "lb.csv", tmp_path / "lb.json", tmp_path / "lb.md"]
    res = _cli("rank", "--data", "cifar10", "--features", same, "-m", "knn", "--confidence", "--draws", "6",
               *(a for o in outs for a in ("-o", o)))  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    header = next(x for x in lines if "p(top)" in x)
    assert "knn_rank" in header and "≈" in header
    table = [x for x in lines if x[:1] in "┏┃┡│└"]
    assert table and all(len(x) <= 80 for x in table), "\n".join(table)
    twin = next(x for x in lines if x.startswith("│ twin "))
    top = next(x for x in lines if x.startswith(f"│ {TRAINED} "))
    assert "0.5" in twin and "≈" in twin and "≈" not in top  # the top is the reference, not marked
    assert "≈" not in next(x for x in lines if x.startswith(f"│ {RANDOM} "))
    assert any(x.startswith("confidence: knn rescored on 6 draws") and "fine-tune both" in x for x in lines)
    header = outs[0].read_text().splitlines()[0].split(",")
    assert header[:7] == ["model", "knn", "knn_rank", "knn_s", "knn_lo", "knn_hi", "p_top"]
    assert header[7] == "within_noise"
    doc = json.loads(outs[1].read_text())
    assert doc["rows"][1]["within_noise"] is True and doc["rows"][2]["within_noise"] is False
    assert doc["confidence"]["draws"] == 6 and len(doc["confidence"]["models"]["twin"]["draw_scores"]) == 6
    assert "knn_lo" in outs[2].read_text() and "fine-tune both" in outs[2].read_text()
    verbose = _cli("rank", "--data", "cifar10", "--features", same, "-m", "knn", "--confidence", "--draws",
                   "3", "--verbose", width=200)  # fmt: skip
    assert verbose.exit_code == 0 and "knn_lo" in verbose.output and "within_noise" in verbose.output
    plain = _cli("rank", "--data", "cifar10", "--features", same, "-m", "knn")
    assert plain.exit_code == 0 and "p(top)" not in plain.output and "confidence:" not in plain.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--confidence", "--draws", "0"], "--draws must be an integer >= 2"),
        (["--confidence", "--draws", "-4"], "--draws must be an integer >= 2"),
        (["--draws", "10"], "add --confidence"),
    ],
)
def test_bad_draws_are_one_line_errors(feature_dir, args, message):  # noqa: F811
    res = _cli("rank", "--data", "cifar10", "--features", feature_dir, "-m", "knn", *args)
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_a_class_too_small_to_subsample_or_a_pool_of_one_is_refused(feature_dir, tmp_path):  # noqa: F811
    small = _copy(feature_dir, tmp_path / "small", {TRAINED: TRAINED, RANDOM: RANDOM}, per_class={3: 1, 5: 2})
    res = _cli("rank", "--data", "cifar10", "--features", small, "-m", "knn", "--confidence")
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "class 3 (1 sample), 5 (2 samples)" in line and "give every class >= 3 samples" in line
    assert "Traceback" not in res.output and len(line.splitlines()) == 1
    assert _cli("rank", "--data", "cifar10", "--features", small, "-m", "knn").exit_code == 0  # without it
    one = _copy(feature_dir, tmp_path / "one", {TRAINED: TRAINED})
    res = _cli("rank", "--data", "cifar10", "--features", one, "-m", "knn", "--confidence")
    assert res.exit_code == 2 and f"the pool has one model ({TRAINED})" in res.output, res.output
    # with a zoo, one --model is refused before anything is extracted
    cache = tmp_path / "cache"
    res = _cli("rank", "--models", SHARED / "zoo" / "zoo.yaml", "--data", SHARED / "datasets" / "cifar10",
               "--model", TRAINED, "--confidence", "--cache-dir", cache)  # fmt: skip
    assert res.exit_code == 2 and "the pool has one model" in res.output and not cache.exists(), res.output
    with pytest.raises(InputError, match="confidence must be True, False or"):
        rank("cifar10", features=feature_dir, metrics=["knn"], confidence=20)  # type: ignore[arg-type]
