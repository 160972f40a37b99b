"""rank / evaluate on real features: shared-zoo CIFAR ResNets run on a few shared-dataset images per class.

The features are written in the paper repos' layout (``{model}_{dataset}_feature.npy`` / ``_label.npy`` /
``_logits.npy``) by a direct TorchScript forward pass, so these tests do not depend on the extraction layer.
The cifar10 ground truth is each model's measured CIFAR-10 top-1 (zoo.yaml ``sanity_accuracy``, in %).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SHARED

from transfersel.agreement import read_ground_truth, weighted_tau
from transfersel.errors import InputError
from transfersel.features import load_feature_dir
from transfersel.rank import evaluate, rank
from transfersel.scoring import score_models

MODELS = ("resnet20_cifar10", "resnet56_cifar10", "resnet8_cifar10_mlperftiny", "resnet20_random_init")
DATASETS = ("cifar10", "mnist")
PER_CLASS = 12
METRICS = ["leep", "knn"]


def _images(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) float32 in [0, 1] and (N,) labels: the first PER_CLASS train images of each class."""
    from PIL import Image

    root = SHARED / "datasets" / dataset / "train"
    xs, ys = [], []
    for c, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for f in sorted(folder.iterdir())[:PER_CLASS]:
            img = Image.open(f).convert("RGB").resize((32, 32), Image.BILINEAR)
            xs.append(np.asarray(img, np.float32) / 255)
            ys.append(c)
    return np.stack(xs), np.array(ys, np.int64)


@pytest.fixture(scope="module")
def feature_dir(tmp_path_factory) -> Path:
    import torch

    out = tmp_path_factory.mktemp("features")
    zoo = {e["name"]: e for e in yaml.safe_load((SHARED / "zoo" / "zoo.yaml").read_text())}
    for dataset in DATASETS:
        x01, y = _images(dataset)
        for name in MODELS:
            e = zoo[name]
            model = torch.jit.load(str(SHARED / "zoo" / e["file"])).eval()
            x = (
                torch.from_numpy(x01).permute(0, 3, 1, 2) - torch.tensor(e["mean"]).view(1, 3, 1, 1)
            ) / torch.tensor(e["std"]).view(1, 3, 1, 1)
            with torch.no_grad():
                features, logits = model(x)
            np.save(out / f"{name}_{dataset}_feature.npy", features.numpy())
            np.save(out / f"{name}_{dataset}_label.npy", y)
            np.save(out / f"{name}_{dataset}_logits.npy", logits.numpy())
    accuracy = {n: round(100 * zoo[n]["sanity_accuracy"], 2) for n in MODELS}
    mnist = dict(zip(MODELS, (60.0, 70.0, 50.0, 20.0), strict=True))  # illustrative values, not measured
    lines = ["dataset,model,accuracy"] + [f"cifar10,{m},{a}" for m, a in accuracy.items()]
    lines += [f"mnist,{m},{a}" for m, a in mnist.items()]
    (out / "gt.csv").write_text("\n".join(lines) + "\n")
    return out


def test_rank_writes_a_leaderboard_in_every_format(feature_dir, tmp_path):
    gt = feature_dir / "gt.csv"
    outs = [tmp_path / "lb.csv", tmp_path / "lb.md", tmp_path / "lb.json"]
    board = rank(
        "cifar10", features=feature_dir, metrics=METRICS, ground_truth=gt, out=outs, plot=tmp_path / "lb.png"
    )
    assert sorted(board.models) == sorted(MODELS) and board.metrics == ("leep", "knn")
    # in-domain control: the untrained ResNet is last by both metrics
    assert board.models[-1] == "resnet20_random_init"
    assert board.rows[-1].ranks == {"leep": 4, "knn": 4}

    rows = list(csv.DictReader(outs[0].open()))
    assert list(rows[0]) == ["model", "leep", "leep_rank", "leep_s", "knn", "knn_rank", "knn_s", "accuracy"]
    assert [r["model"] for r in rows] == board.models and [int(r["leep_rank"]) for r in rows] == [1, 2, 3, 4]
    leep = [float(r["leep"]) for r in rows]
    assert leep == sorted(leep, reverse=True) and all(v < 0 for v in leep)  # LEEP is a mean log-likelihood
    assert float(rows[-1]["accuracy"]) == 9.14

    doc = json.loads(outs[2].read_text())
    assert doc["dataset"] == "cifar10" and len(doc["rows"]) == 4
    corr = {c["metric"]: c for c in doc["correlations"]}
    order = board.models
    acc = read_ground_truth(gt).for_models("cifar10", order)
    for m in METRICS:
        tau = weighted_tau([doc["scores"][x][m] for x in order], acc)
        assert corr[m]["weighted_tau"] == pytest.approx(tau, abs=1e-15)
        assert corr[m]["best"] == "resnet56_cifar10" and 0 < corr[m]["rel_at_1"] <= 1

    md = outs[1].read_text().splitlines()
    assert md[0] == "**cifar10: ranked by leep**"
    assert md[2].startswith("| model | leep | leep_rank |") and md[3].startswith("|---|---:|")
    assert len([line for line in md if line.startswith("| resnet")]) == 4
    assert (tmp_path / "lb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = board.correlation_table()
    assert table.columns[:3] == ("dataset", "metric", "tau_w") and len(table.rows) == 2


def test_normalised_scores_span_zero_to_one_and_keep_the_ranking(feature_dir):
    raw = rank("mnist", features=feature_dir, metrics=["knn"])
    board = rank("mnist", features=feature_dir, metrics=["knn"], normalise=True)
    assert board.models == raw.models
    values = [r.normalised["knn"] for r in board.rows]
    assert values[0] == 1.0 and values[-1] == 0.0 and values == sorted(values, reverse=True)
    assert board.table().columns[1] == "knn_norm" and board.table().rows[0][1] == 1.0


def test_a_model_without_logits_is_nan_ranked_last_and_noted(feature_dir, tmp_path):
    feats = load_feature_dir(feature_dir, "cifar10", models=list(MODELS))
    feats[0] = type(feats[0])(feats[0].model, feats[0].features, feats[0].labels, None)
    notes: list[str] = []
    scores = score_models(feats, ["leep", "knn"], notes=notes).scores
    assert math.isnan(scores["leep"]["resnet20_cifar10"]) and math.isfinite(scores["knn"]["resnet20_cifar10"])
    assert any("resnet20_cifar10: leep needs source logits" in n for n in notes)
    # through the file layout: drop the logits file; the leaderboard ranks it last and says so
    d = tmp_path / "f"
    d.mkdir()
    for p in feature_dir.glob("*_cifar10_*.npy"):
        if p.name != "resnet56_cifar10_cifar10_logits.npy":
            (d / p.name).symlink_to(p)
    board = rank("cifar10", features=d, metrics=["leep"])
    assert board.models[-1] == "resnet56_cifar10" and math.isnan(board.rows[-1].scores["leep"])
    assert "leep: NaN for resnet56_cifar10 (ranked last)" in board.notes


def test_evaluate_builds_the_metrics_by_datasets_table(feature_dir, tmp_path):
    outs = [tmp_path / "tau.md", tmp_path / "tau.csv", tmp_path / "tau.json"]
    ev = evaluate(
        [],
        features=feature_dir,
        ground_truth=feature_dir / "gt.csv",
        metrics=METRICS,
        out=outs,
        plot=tmp_path / "scatter.png",
        n_boot=50,
    )
    assert ev.tau.datasets == DATASETS and ev.tau.metrics == ("leep", "knn")
    rows = list(csv.reader(outs[1].open()))
    assert rows[0] == ["metric", "cifar10", "mnist", "avg"] and [r[0] for r in rows[1:]] == METRICS
    for r in rows[1:]:
        per_dataset = [float(v) for v in r[1:3]]
        assert all(-1 <= v <= 1 for v in per_dataset) and float(r[3]) == pytest.approx(np.mean(per_dataset))
    md = outs[0].read_text().splitlines()
    assert md[2] == "| metric | cifar10 | mnist | avg |" and md[3] == "|---|---:|---:|---:|"
    doc = json.loads(outs[2].read_text())
    assert len(doc["correlations"]) == 4 and set(doc["average"]) == set(METRICS)
    assert (tmp_path / "scatter.png").stat().st_size > 10_000


def test_ground_truth_mismatch_and_missing_features_are_clear_errors(feature_dir, tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("dataset,model,accuracy\ncifar10,resnet20_cifar10,80\ncifar10,vit_b16,90\n")
    # a ground truth may hold more models than are ranked (vit_b16), but must cover every ranked one
    with pytest.raises(InputError, match="has no accuracy on 'cifar10' for: .*resnet56_cifar10"):
        rank("cifar10", features=feature_dir, metrics=["knn"], ground_truth=gt)
    with pytest.raises(InputError, match="has no .*_svhn_feature.npy for any model"):
        rank("svhn", features=feature_dir, metrics=["knn"])
    with pytest.raises(InputError, match="unknown metric 'sfdaa'"):
        rank("cifar10", features=feature_dir, metrics=["sfdaa"])


def test_cli_rank_and_evaluate_print_and_write(feature_dir, tmp_path):
    from typer.testing import CliRunner

    from transfersel.cli import app

    runner = CliRunner()
    gt = str(feature_dir / "gt.csv")
    common = ["--features", str(feature_dir), "--ground-truth", gt, "-m", "leep", "-m", "knn"]
    res = runner.invoke(app, ["rank", "--data", "cifar10", *common, "--out", str(tmp_path / "lb.csv")])
    assert res.exit_code == 0, res.output
    assert "cifar10: ranked by leep" in res.output and "resnet20_random_init" in res.output
    assert "tau_w" in res.output and (tmp_path / "lb.csv").is_file()
    res = runner.invoke(app, ["evaluate", *common, "--out", str(tmp_path / "tau.md")])
    assert res.exit_code == 0, res.output
    assert "weighted Kendall" in res.output and "avg" in res.output
    assert (tmp_path / "tau.md").read_text().splitlines()[2] == "| metric | cifar10 | mnist | avg |"
    res = runner.invoke(app, ["rank", "--data", "svhn", "--features", str(feature_dir), "-m", "knn"])
    assert res.exit_code == 2 and "error:" in res.output and "svhn" in res.output


def test_ensemble_selects_k_models_and_writes_them_next_to_the_top_k(feature_dir, tmp_path):
    from typer.testing import CliRunner

    from transfersel.cli import app
    from transfersel.rank import select_ensemble

    gt = feature_dir / "gt.csv"
    outs = [tmp_path / "ens.csv", tmp_path / "ens.json"]
    result = select_ensemble("cifar10", features=feature_dir, k=3, metric="knn", ground_truth=gt, out=outs)
    picks = result.ensemble.picks
    assert len(picks) == 3 and picks[0].model == result.leaderboard.models[0] and picks[0].t == 1.0
    assert len({p.model for p in picks}) == 3 and all(0 <= p.g <= 1 for p in picks)
    rows = list(csv.DictReader(outs[0].open()))
    assert list(rows[0]) == [
        "#", "selected", "score", "t", "g", "objective", "accuracy", "top_k_by_score", "top_k_accuracy"
    ]  # fmt: skip
    assert [r["selected"] for r in rows] == [p.model for p in picks]
    assert [r["top_k_by_score"] for r in rows] == result.leaderboard.models[:3]
    assert float(rows[0]["accuracy"]) == result.leaderboard.rows[0].accuracy
    doc = json.loads(outs[1].read_text())
    assert [p["model"] for p in doc["picks"]] == [p.model for p in picks]
    res = CliRunner().invoke(
        app, ["ensemble", "--data", "cifar10", "--features", str(feature_dir), "-m", "knn", "--k", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "2 models by knn + nuclear complementarity (greedy, r=0.5)" in res.output
