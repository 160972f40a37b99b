"""End to end: `rank` extracts 3 small shared-zoo models on a tiny dataset subset and writes every format."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import SHARED

from transfersel.rank import rank

MODELS = ["resnet20_cifar10", "resnet8_cifar10_mlperftiny", "resnet20_random_init"]


@pytest.mark.slow
def test_rank_extracts_then_writes_csv_markdown_json_png(tmp_path):
    outs = [tmp_path / "lb.csv", tmp_path / "lb.md", tmp_path / "lb.json"]
    kwargs = dict(
        models=SHARED / "zoo" / "zoo.yaml",
        only=MODELS,
        metrics=["leep", "knn"],
        max_per_class=8,
        cache=tmp_path / "cache",
        device="cpu",
    )
    board = rank(SHARED / "datasets" / "cifar10", out=outs, plot=tmp_path / "lb.png", **kwargs)
    assert board.dataset == "cifar10" and sorted(board.models) == sorted(MODELS)
    assert board.models[-1] == "resnet20_random_init"  # the untrained control is last on in-domain data

    rows = list(csv.DictReader(outs[0].open()))
    assert [r["model"] for r in rows] == board.models and [int(r["leep_rank"]) for r in rows] == [1, 2, 3]
    assert all(float(r["leep"]) < 0 and 0 <= float(r["knn"]) <= 1 for r in rows)
    doc = json.loads(outs[2].read_text())
    assert doc["dataset"] == "cifar10" and set(doc["scores"]) == set(MODELS)
    md = outs[1].read_text().splitlines()
    assert md[2].startswith("| model | leep | leep_rank | leep_s | knn |") and len(md) >= 7
    assert (tmp_path / "lb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # second run: everything comes from the cache, same scores
    again = rank(SHARED / "datasets" / "cifar10", **kwargs)
    assert [r.scores for r in again.rows] == [r.scores for r in board.rows]
