"""rank/evaluate on real features (test_rank's shared-zoo CIFAR ResNets on 12 images per class):
the reduction in every output, the one-line saturation and all-tie notices, pool metrics over the zoo,
and per-model isolation (one model with NaN features is ranked last, named, and the exit status is 1).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_rank import MODELS, feature_dir  # noqa: F401  (the module-scoped fixture)
from typer.testing import CliRunner

from transfersel.cli import app
from transfersel.features import load_feature_dir
from transfersel.metrics import auto_dim, get_metric
from transfersel.rank import evaluate, rank
from transfersel.regimes import tie_ranks
from transfersel.scoring import plan_metrics


def _copy(src: Path, dst: Path, *, per_class: int | None = None, edit=None) -> Path:
    """The cifar10 feature files of ``src`` in ``dst``: the first ``per_class`` samples of each class,
    ``edit(model, features) -> features`` applied to each model's features."""
    dst.mkdir()
    for mf in load_feature_dir(src, "cifar10", models=list(MODELS)):
        y = np.asarray(mf.labels)
        keep = np.arange(len(y))
        if per_class is not None:
            keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
        X = np.asarray(mf.features)[keep]
        X = edit(mf.model, X) if edit else X
        np.save(dst / f"{mf.model}_cifar10_feature.npy", X)
        np.save(dst / f"{mf.model}_cifar10_label.npy", y[keep])
        np.save(dst / f"{mf.model}_cifar10_logits.npy", np.asarray(mf.logits)[keep])
    return dst


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"}, terminal_width=200)


def test_the_reduction_is_recorded_in_every_output(feature_dir, tmp_path):  # noqa: F811
    outs = [tmp_path / "lb.csv", tmp_path / "lb.md", tmp_path / "lb.json"]
    board = rank("cifar10", features=feature_dir, metrics=["sfda", "logme"], reduce="auto", out=outs)
    mf = load_feature_dir(feature_dir, "cifar10", models=[MODELS[0]])[0]
    n, d, c = len(mf.labels), mf.features.shape[1], len(np.unique(mf.labels))
    expected = auto_dim(n, d, c)
    assert expected < d  # the test is about a real projection
    assert board.dims["sfda"][MODELS[0]] == expected
    line = next(x for x in board.notes if x.startswith("sfda, logme: reduce auto -> "))
    assert f"d = {expected}" in line
    assert "logme: variant padded" in " ".join(board.notes) and board.options["logme"]["variant"] == "padded"
    doc = json.loads(outs[2].read_text())
    assert doc["reduce"] == "auto" and doc["dims"]["sfda"][MODELS[0]] == expected
    assert doc["options"]["logme"] == {"variant": "padded"}
    header = outs[0].read_text().splitlines()[0].split(",")
    assert "sfda_d" in header and "logme_d" in header
    md = outs[1].read_text()
    assert "reduce auto" in md.splitlines()[0] and line in md
    # reduce none scores the features as they are, and says so; the scores differ from the reduced ones
    exact = rank("cifar10", features=feature_dir, metrics=["sfda"], reduce=None)
    assert any(x == "sfda: reduce none -> features as they are (no projection)" for x in exact.notes)
    assert exact.dims["sfda"][MODELS[0]] == d
    assert exact.rows[0].scores["sfda"] != board.rows[0].scores["sfda"]
    # an explicit variant wins over the padded default
    ref = rank("cifar10", features=feature_dir, metrics=["logme:variant=fixed_point"], reduce=None)
    assert ref.options["logme"]["variant"] == "fixed_point"
    assert not any("variant padded" in x for x in ref.notes)


def test_a_saturated_regime_is_stated_once_per_metric(feature_dir, tmp_path):  # noqa: F811
    small = _copy(feature_dir, tmp_path / "small", per_class=4)  # N - C = 30 <= D
    out = [tmp_path / "lb.md", tmp_path / "lb.json"]
    result = _cli("rank", "--data", "cifar10", "--features", small, "-m", "sfda", "-m", "hscore",
                  "--reduce", "none", "--out", out[0], "--out", out[1])  # fmt: skip
    assert result.exit_code == 0, result.output
    for metric in ("sfda", "hscore"):
        needle = f"{metric}: N - "
        said = [line for line in result.output.splitlines() if metric in line and "saturat" in line]
        assert len(said) == 1 and needle in said[0], result.output  # console: table notes and warnings
        assert out[0].read_text().count(needle) == 1
        notes = json.loads(out[1].read_text())["notes"]
        said = [n for n in notes if n.startswith(f"{metric}: ") and ("saturat" in n or "tie" in n)]
        assert len(said) == 1 and f"all {len(MODELS)} scored models tie" in said[0]  # saturated and tied
    # reduced, the same data is out of the regime and says nothing of it
    reduced = rank("cifar10", features=small, metrics=["sfda"], reduce="auto")
    assert not any("saturated" in n for n in reduced.notes)


def test_an_all_tie_is_one_note_and_equal_ranks(feature_dir, tmp_path):  # noqa: F811
    same = load_feature_dir(feature_dir, "cifar10", models=[MODELS[0]])[0].features
    tied = _copy(feature_dir, tmp_path / "tied", edit=lambda _m, _x: np.asarray(same))
    board = rank("cifar10", features=tied, metrics=["knn", "hscore"], reduce=None)
    for metric in ("knn", "hscore"):
        assert {r.ranks[metric] for r in board.rows} == {1}
        assert sum(n.startswith(f"{metric}: all {len(MODELS)} scored models tie") for n in board.notes) == 1
        assert sum(n.startswith(f"{metric}") and "tie" in n for n in board.notes) == 1
    assert not any("zoo order" in n for n in board.notes)
    assert tie_ranks([0.5, math.nan, 0.9, 0.5, 0.5 * (1 + 1e-12)]) == [2, 5, 1, 2, 2]
    # an infinite score (a log-form metric at probability 0) ties only an equal one, never its neighbour
    assert tie_ranks([-0.5, -math.inf, math.inf, -math.inf, 3.0]) == [3, 4, 1, 4, 2]


def test_pool_metrics_rank_over_the_zoo(feature_dir, tmp_path):  # noqa: F811
    assert {"ncti", "etran"} <= set(plan_metrics(["all"]).names)
    board = rank("cifar10", features=feature_dir, metrics=["ncti", "etran"], reduce=None)
    feats = load_feature_dir(feature_dir, "cifar10", models=list(MODELS))
    for name in ("ncti", "etran"):
        metric = get_metric(name)
        direct = metric.combine({f.model: metric.components(f.features, f.labels) for f in feats})
        for r in board.rows:
            assert r.scores[name] == pytest.approx(direct[r.model], rel=1e-12)
        assert len({r.scores[name] for r in board.rows}) > 1
    # a pool of one model is the metric's error, as a note: no crash, NaN
    single = _copy(feature_dir, tmp_path / "one")
    for p in single.glob("*.npy"):
        if not p.name.startswith(MODELS[0]):
            p.unlink()
    alone = rank("cifar10", features=single, metrics=["ncti", "knn"], reduce=None)
    assert math.isnan(alone.rows[0].scores["ncti"]) and math.isfinite(alone.rows[0].scores["knn"])
    assert any(n.startswith("ncti: not scored: ncti is relative to a pool") for n in alone.notes)


def test_score_prints_a_pool_metrics_components(feature_dir):  # noqa: F811
    f, y = (feature_dir / f"{MODELS[0]}_cifar10_{k}.npy" for k in ("feature", "label"))
    result = _cli("score", f, y, "-m", "ncti", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["metric"]: r["score"] for r in json.loads(result.output)}
    assert rows == pytest.approx(
        {f"ncti.{k}": v for k, v in get_metric("ncti").components(np.load(f), np.load(y)).items()}
    )


def test_a_model_with_nan_features_is_ranked_last_and_the_run_goes_on(feature_dir, tmp_path):  # noqa: F811
    bad = MODELS[1]

    def poison(model: str, X: np.ndarray) -> np.ndarray:
        if model != bad:
            return X
        X = X.copy()
        X[3, 5] = np.nan
        return X

    broken = _copy(feature_dir, tmp_path / "broken", edit=poison)
    board = rank("cifar10", features=broken, metrics=["sfda", "knn", "ncti"], reduce="auto")
    assert board.rows[-1].model == bad and all(math.isnan(v) for v in board.rows[-1].scores.values())
    assert all(math.isfinite(v) for r in board.rows[:-1] for v in r.scores.values())
    assert list(board.failures) == [bad] and "NaN" in board.failures[bad]
    assert any(n.startswith(f"{bad}: invalid input") for n in board.notes)
    out = tmp_path / "lb.json"
    result = _cli("rank", "--data", "cifar10", "--features", broken, "-m", "knn", "--out", out)
    assert result.exit_code == 1, result.output
    assert f"partial failure: 1 model(s) got NaN, ranked last: {bad}" in result.output
    doc = json.loads(out.read_text())
    assert doc["rows"][-1]["model"] == bad and list(doc["failures"]) == [bad]
    # evaluate carries the failure too (and a clean run exits 0)
    gt = tmp_path / "gt.csv"
    gt.write_text((feature_dir / "gt.csv").read_text())
    ev = evaluate(["cifar10"], features=broken, ground_truth=gt, metrics=["knn"])
    assert list(ev.failures) == [f"cifar10/{bad}"]
    clean = _cli("rank", "--data", "cifar10", "--features", feature_dir, "-m", "knn")
    assert clean.exit_code == 0, clean.output


def test_ensemble_scores_a_pool_metric_and_skips_a_failed_model(feature_dir, tmp_path):  # noqa: F811
    from transfersel.rank import select_ensemble

    bad = MODELS[2]
    broken = _copy(feature_dir, tmp_path / "b", edit=lambda m, X: np.where(m == bad, np.inf, X))
    result = select_ensemble("cifar10", features=broken, metric="ncti", k=2, reduce="auto")
    assert bad not in result.ensemble.models and len(result.ensemble.models) == 2
    assert list(result.leaderboard.failures) == [bad]
    result = _cli("ensemble", "--data", "cifar10", "--features", broken, "-m", "ncti", "--k", "2")
    assert result.exit_code == 1 and "partial failure" in result.output, result.output


def test_auto_is_the_default_beside_the_priors(feature_dir):  # noqa: F811
    from conftest import SHARED

    board = rank("cifar10", features=feature_dir, models=SHARED / "zoo" / "zoo.yaml", only=list(MODELS))
    assert board.metrics[0] == "auto" and "prior_input_size" in board.metrics
    assert all(math.isfinite(r.scores["auto"]) for r in board.rows)
    assert sum(n.startswith("auto used ") for n in board.notes) == 1
    ev = evaluate(["cifar10"], features=feature_dir, ground_truth=feature_dir / "gt.csv", models=None)
    assert ev.leaderboards[0].metrics[0] == "auto"
