"""The command line as a user meets it: one option vocabulary, checks before heavy work, honest exit codes.

Real models and data: three CIFAR-10 ResNets of the shared zoo on 3 images per class of the shared CIFAR-10.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from conftest import SHARED
from typer.testing import CliRunner

from transfersel.cli import app
from transfersel.data import open_dataset
from transfersel.store import FeatureStore
from transfersel.zoo import load_zoo

ZOO = SHARED / "zoo" / "zoo.yaml"
DATA = SHARED / "datasets" / "cifar10"
MODELS = ("resnet20_cifar10", "resnet56_cifar10", "resnet20_random_init")
PICK = [a for m in MODELS for a in ("--model", m)]
SAMPLE = ["--max-per-class", "3", "--seed", "0"]


def run(*args: str, width: int = 80):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)}, terminal_width=width)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A feature cache holding the three models on the sample (extracted once for the module)."""
    root = tmp_path_factory.mktemp("cache")
    res = run(
        "extract", "--models", ZOO, "--data", DATA, *PICK, *SAMPLE, "--cache-dir", root, "--device", "cpu"
    )
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture
def gt(tmp_path):
    """Ground truth of the three models plus one more that is not ranked (a larger ground truth)."""
    path = tmp_path / "gt.csv"
    rows = [
        "cifar10,resnet20_cifar10,91.6",
        "cifar10,resnet56_cifar10,94.4",
        "cifar10,resnet20_random_init,10",
    ]
    path.write_text("dataset,model,accuracy\n" + "\n".join([*rows, "cifar10,resnet32_cifar10,92.5"]) + "\n")
    return path


def _empty_cache(tmp_path):
    root = tmp_path / "fresh-cache"
    return root, lambda: FeatureStore(root).entries() == []


def test_version_and_completion_and_literal_help():
    from transfersel import __version__

    assert run("--version").output.strip() == f"transfersel {__version__}"
    assert "--install-completion" in run("--help").output
    demo = run("demo", "--help", width=200).output
    assert "pip install 'transfersel[demo]'" in demo  # rich markup would eat [demo]
    assert "open_clip:M:P" in run("rank", "--help", width=200).output


@pytest.mark.parametrize("command", ["extract", "rank", "evaluate", "ensemble", "finetune"])
def test_every_command_lists_the_shared_options_under_the_same_names(command):
    text = run(command, "--help", width=200).output
    for option in (
        "--models",
        "--model",
        "--data",
        "--split",
        "--max-per-class",
        "--seed",
        "--cache-dir",
        "--device",
    ):
        assert re.search(rf"(^|\s){option}\s", text), f"{command} lacks {option}"
    assert "--only" not in text and "--cache " not in text  # old spellings: hidden aliases


def test_leaderboard_at_80_columns_shows_every_score(cache, gt, tmp_path):
    md = tmp_path / "lb.md"
    res = run(
        "rank", "--models", ZOO, "--data", DATA, *PICK, *SAMPLE, "--cache", cache,  # --cache: old spelling
        "-m", "sfda", "-m", "knn", "-m", "leep", "--ground-truth", gt, "-o", md,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    from transfersel.rank import rank

    board = rank(DATA, models=ZOO, only=MODELS, metrics=["sfda", "knn", "leep"], cache=cache, max_per_class=3)
    lines = res.output.splitlines()
    for row in board.rows:
        line = next(x for x in lines if row.model in x and "│" in x)
        for m in ("sfda", "knn", "leep"):  # the prior_* baselines are shown under --verbose and in files
            assert f"{row.scores[m]:.4g}"[:5] in line, f"{m} score of {row.model} not visible: {line!r}"
    assert "…" not in res.output  # no cell cut short
    assert "_s " not in lines[2]  # seconds only under --verbose
    assert "knn_s" in run("rank", "--models", ZOO, "--data", DATA, *PICK, *SAMPLE, "--cache-dir", cache,
                          "-m", "knn", "--verbose", width=200).output  # fmt: skip
    # a ground truth larger than the ranked models works, and its agreement table lands in the Markdown too
    text = md.read_text()
    assert "agreement with the ground truth" in text and "tau_w" in text and "prior_feature_dim" in text
    assert str(board) == str(board).rstrip("\n") + "\n" and "resnet56_cifar10" in str(board)  # print(board)


def test_metric_options_on_the_command_line(cache):
    common = [
        "rank",
        "--models",
        ZOO,
        "--data",
        DATA,
        *PICK,
        *SAMPLE,
        "--cache-dir",
        cache,
        "--device",
        "cpu",
    ]
    assert run(*common, "-m", "knn:k=1").exit_code == 0
    from transfersel.rank import rank

    a = rank(DATA, models=ZOO, only=MODELS, metrics=["knn:k=1"], cache=cache, max_per_class=3)
    b = rank(
        DATA,
        models=ZOO,
        only=MODELS,
        metrics=["knn"],
        options={"knn": {"k": 1}},
        cache=cache,
        max_per_class=3,
    )
    c = rank(DATA, models=ZOO, only=MODELS, metrics=["knn"], cache=cache, max_per_class=3)
    assert [r.scores for r in a.rows] == [r.scores for r in b.rows] != [r.scores for r in c.rows]
    bad = run(*common, "-m", "knn:kk=1")
    assert bad.exit_code == 2 and "knn has no option kk" in bad.output


def test_a_metric_that_cannot_run_is_left_out_and_the_exit_status_says_so(cache, tmp_path):
    common = ["rank", "--models", ZOO, "--data", DATA, *PICK, *SAMPLE]
    res = run(*common, "--cache-dir", cache, "-m", "knn", "-m", "emms")
    assert res.exit_code == 1
    assert "emms cannot run: it needs label embeddings; pass --embedder" in " ".join(res.output.split())
    assert "not ranked: emms" in res.output
    header = next(x for x in res.output.splitlines() if "┃ model" in x)
    assert "knn" in header and "emms" not in header  # no all-NaN emms column ranked 1-3
    # the only metric cannot run: refused before any extraction
    root, untouched = _empty_cache(tmp_path)
    alone = run(*common, "--cache-dir", root, "-m", "emms")
    assert alone.exit_code == 2 and "no metric can run: emms cannot run" in alone.output and untouched()


def test_evaluate_advises_only_options_it_has(cache, gt):
    res = run("evaluate", "--ground-truth", gt, "--models", ZOO, "--data", DATA, *PICK, *SAMPLE,
              "--cache-dir", cache, "-m", "all", width=250)  # fmt: skip
    assert res.exit_code == 0, res.output
    advised = set(re.findall(r"pass (--[a-z-]+)", res.output))
    assert "--embedder" in advised
    helptext = run("evaluate", "--help", width=200).output
    assert all(option in helptext for option in advised)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rank", "-o", "lb.xlsx"], "cannot write lb.xlsx: unknown format"),
        (["rank", "--plot", "lb.pdf"], "figures are PNG files"),
        (["evaluate", "--ground-truth", "GT", "-o", "tau.txt"], "cannot write tau.txt"),
        (["ensemble", "-o", "picks.xlsx"], "cannot write picks.xlsx"),
        (["finetune", "-o", "gt.txt"], "the ground truth is a CSV file"),
        (["rank", "--ground-truth", "GT_MISSING"], "has no accuracy on 'cifar10' for: resnet20_random_init"),
        (["ensemble", "-m", "knn", "-m", "logme"], "ensemble scores by one metric, got 2 (knn, logme)"),
    ],
)
def test_bad_requests_are_refused_before_any_extraction(args, message, tmp_path, gt):
    root, untouched = _empty_cache(tmp_path)
    missing = tmp_path / "gt_missing.csv"
    missing.write_text(
        "dataset,model,accuracy\ncifar10,resnet20_cifar10,91.6\ncifar10,resnet56_cifar10,94.4\n"
    )
    args = [str(gt) if a == "GT" else str(missing) if a == "GT_MISSING" else a for a in args]
    args = [str(tmp_path / a) if a.endswith((".xlsx", ".pdf", ".txt")) else a for a in args]
    res = run(*args, "--models", ZOO, "--data", DATA, *PICK, *SAMPLE, "--cache-dir", root, width=300)
    assert res.exit_code == 2, res.output
    assert message in res.output.replace(str(tmp_path) + "/", "") and untouched()


def test_zoo_lists_full_names_and_json():
    names = [e.name for e in load_zoo(ZOO)]
    table = run("zoo", ZOO, width=80).output
    assert all(n in table for n in names)  # never cut short, even at 80 columns
    doc = json.loads(run("zoo", ZOO, "--json").output)
    assert [r["model"] for r in doc] == names and all("input" in r for r in doc)


def test_cache_info_is_one_json_document_and_rm_dry_run_keeps_entries(cache, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(cache, root)
    info = run("cache", "info", "resnet20_cifar10", "--cache-dir", root)
    (doc,) = json.loads(info.output)
    assert doc["model"] == "resnet20_cifar10" and doc["split"] == "train"
    ds = open_dataset(DATA, split="train", max_per_class=3, seed=0)
    listed = run("cache", "ls", "--cache-dir", root, "--json")
    assert {r["subsample"] for r in json.loads(listed.output)} == {ds.fingerprint[:12]}
    both = run("cache", "info", "resnet20_cifar10", "--split", "train", "--cache-dir", root)
    assert len(json.loads(both.output)) == 1
    dry = run("cache", "rm", "--model", "resnet56_cifar10", "--dry-run", "--cache-dir", root)
    assert dry.exit_code == 0 and "1 entry would be removed" in dry.output
    assert len(FeatureStore(root).entries()) == len(MODELS)
    gone = run("cache", "rm", "--model", "resnet56_cifar10", "--cache-dir", root)
    assert "1 entry removed" in gone.output and len(FeatureStore(root).entries()) == len(MODELS) - 1
    assert np.isfinite(FeatureStore(root).entries()[0].features).all()
