"""scripts/fit_auto.py: the leave-one-dataset-out fit never sees the held-out dataset."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import REPO

from transfersel.agreement import GroundTruth

sys.path.insert(0, str(REPO / "scripts"))
import fit_auto  # noqa: E402

MODELS = [f"m{i}" for i in range(10)]
COMPONENTS = ["good", "good@32", "half", "noise", "prior_params"]


def synthetic(seed: int) -> tuple[dict, GroundTruth]:
    """4 datasets: 'good' tracks the accuracy, 'good@32' is a copy, 'half' tracks half of it, 'noise' none."""
    rng = np.random.default_rng(seed)
    table, acc = {}, {}
    for d in ("a", "b", "c", "d"):
        a = rng.uniform(50, 90, len(MODELS))
        comps = {
            "good": a + rng.normal(0, 3, len(MODELS)),
            "half": a + rng.normal(0, 15, len(MODELS)),
            "noise": rng.normal(0, 1, len(MODELS)),
            "prior_params": rng.normal(0, 1, len(MODELS)),
        }
        comps["good@32"] = comps["good"] + 1e-3
        table[d] = {c: dict(zip(MODELS, v.tolist(), strict=True)) for c, v in comps.items()}
        acc[d] = dict(zip(MODELS, a.tolist(), strict=True))
    return table, GroundTruth(acc, "synthetic")


def test_fit_picks_the_informative_component_once_and_ignores_held_out_data():
    table, gt = synthetic(0)
    got = fit_auto.fit(table, gt, ["a", "b", "c"], COMPONENTS, 3)
    assert got["components"][0] == "good" and "good@32" not in got["components"]  # one form per metric
    # the held-out dataset "d" does not enter: scrambling its ground truth changes nothing
    scrambled = GroundTruth({**gt.accuracy, "d": {m: float(i) for i, m in enumerate(MODELS)}}, "x")
    assert fit_auto.fit(table, scrambled, ["a", "b", "c"], COMPONENTS, 3) == got


@pytest.mark.parametrize("search", ["top_k", "greedy"])
def test_subsets_grow_by_one(search):
    table, gt = synthetic(1)
    path = fit_auto.SEARCH[search](table, gt, ["a", "b"], COMPONENTS, "rank", 3)
    assert [len(s) for s in path] == [1, 2, 3] and all(
        p[: len(q)] == q for p, q in zip(path[1:], path[:-1], strict=True)
    )


def test_write_selection_keeps_other_keys(tmp_path):
    path = tmp_path / "selection.json"
    path.write_text(json.dumps({"reduce": {"k": 1}}))
    final = {"components": ["good", "half"], "standardise": "rank"}
    fit_auto.write_selection(path, final, tmp_path / "gt.csv", ["a", "b"], 0.5)
    doc = json.loads(path.read_text())
    assert doc["reduce"] == {"k": 1} and doc["auto"]["weights"] == {"good": 1.0, "half": 1.0}
    assert "fit_auto.py" in doc["auto"]["command"]


def test_seed_ceiling_uses_complete_seed_pairs_only(tmp_path):
    from transfersel.agreement import weighted_tau

    acc = {0: [70, 60, 50, 40], 1: [68, 62, 49, 41], 2: [71, 59, 52, 38]}
    log = tmp_path / "gt.runs.jsonl"
    rows = [
        {"dataset": "a", "stage": "test", "seed": s, "model": f"m{i}", "accuracy": v}
        for s, vals in acc.items()
        for i, v in enumerate(vals)
    ]
    rows.append({"dataset": "a", "stage": "val", "seed": 0, "model": "m0", "accuracy": 1.0})  # not a retrain
    rows.append(
        {"dataset": "b", "stage": "test", "seed": 0, "model": "m0", "accuracy": 50.0}
    )  # seed 1 missing
    for r in rows:  # as RunLog writes them: the run key names the dataset's fingerprint
        run = {k: r[k] for k in ("model", "seed", "stage")}
        r["key"] = json.dumps({"dataset": f"fp-{r['dataset']}", **run})
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gt = GroundTruth({"a": {f"m{i}": 1.0 for i in range(4)}, "b": {"m0": 1.0, "m1": 2.0}}, "x")
    want = np.mean([weighted_tau(acc[i], acc[j]) for i, j in ((0, 1), (0, 2), (1, 2))])
    assert fit_auto.seed_ceiling(log, gt) == {"a": pytest.approx(want)}
