"""evaluate --executor ray over two datasets: one Ray for the whole command, started and shut down by it.

No Ray runs before this module's test (unlike tests/test_ray_executor.py, whose fixture holds one): the
command starts a local Ray at its first extraction task, keeps it for the second dataset and shuts it down.
"""

from __future__ import annotations

import pytest
from conftest import SHARED
from typer.testing import CliRunner

from transfersel.cli import app
from transfersel.store import FeatureStore

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster and real models

ZOO = SHARED / "zoo" / "zoo.yaml"
DATASETS = {"mnist": SHARED / "datasets" / "mnist", "sign_digits": SHARED / "datasets" / "sign_digits"}
MODELS = ("lenet5_mnist", "resnet20_cifar10")


def test_evaluate_extracts_every_dataset_on_one_ray(tmp_path, monkeypatch):
    assert not ray.is_initialized()
    starts: list[object] = []
    init = ray.init
    monkeypatch.setattr(ray, "init", lambda *a, **k: starts.append(k) or init(*a, **k))
    gt = tmp_path / "gt.csv"
    rows = [f"{d},{m},{acc}" for d in DATASETS for m, acc in zip(MODELS, (0.9, 0.5), strict=True)]
    gt.write_text("dataset,model,accuracy\n" + "\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    args = ["evaluate", "--ground-truth", str(gt), "--models", str(ZOO), "--max-per-class", "2", "-m", "leep",
            "--cache-dir", str(cache), "--device", "cpu", "--executor", "ray", "--jobs", "2"]  # fmt: skip
    for d in DATASETS.values():
        args += ["--data", str(d)]
    for m in MODELS:
        args += ["--model", m]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(starts) == 1 and not ray.is_initialized()  # one Ray for both datasets, shut down at the end
    held = sorted((e.meta["dataset"], e.model) for e in FeatureStore(cache).entries())
    assert held == sorted((d, m) for d in DATASETS for m in MODELS)
