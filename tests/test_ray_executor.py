"""--executor ray: a local Ray cluster (2 CPUs, started and shut down here) against the local executor.

Real models of the shared zoo on tiny subsets of the shared datasets: the features are bit-identical, a worker
killed mid-write is retried without leaving a torn cache entry, a broken model fails alone, and a fine-tuning
run log written through Ray resumes like the local one and holds the same accuracies.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import SHARED
from typer.testing import CliRunner

from transfersel.cli import app
from transfersel.data import open_dataset
from transfersel.distributed import extract_on, finetune_on
from transfersel.errors import InputError
from transfersel.executor import Executor, TaskPool
from transfersel.extract import extract
from transfersel.finetune import Protocol, finetune
from transfersel.rank import rank
from transfersel.store import FeatureStore
from transfersel.zoo import load_zoo

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster and real models

ZOO = SHARED / "zoo" / "zoo.yaml"
MNIST = SHARED / "datasets" / "mnist"
CIFAR = SHARED / "datasets" / "cifar10"
SIGNS = SHARED / "datasets" / "sign_digits"
RAY = Executor("ray", jobs=2)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray for the module; the executor joins it (and so does not shut it down)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _extract_like_a_worker(zoo, ds, root, **options):
    """Local extraction with a Ray task's torch threads (1): float reductions depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(RAY.threads_per_job or 1)
    try:
        return extract(zoo, ds, store=FeatureStore(root), device="cpu", progress=False, **options)
    finally:
        torch.set_num_threads(threads)


def _same_entries(a, b) -> None:
    for name, cf in a.items():
        np.testing.assert_array_equal(cf.features, b[name].features)
        np.testing.assert_array_equal(cf.labels, b[name].labels)
        np.testing.assert_array_equal(cf.logits, b[name].logits)


def test_ray_extraction_is_bit_identical_to_local(tmp_path):
    zoo = load_zoo(ZOO, only=["lenet5_mnist", "resnet20_cifar10"])
    ds = open_dataset(MNIST, split="train", max_per_class=3, seed=0)
    local = _extract_like_a_worker(zoo, ds, tmp_path / "local")
    remote = extract_on(RAY, zoo, ds, store=FeatureStore(tmp_path / "ray"), device="cpu", progress=False)
    assert remote.failures == {} and remote.extracted == [e.name for e in zoo] == local.extracted
    assert list(remote.features) == list(local.features)
    _same_entries(local.features, remote.features)
    again = extract_on(RAY, zoo, ds, store=FeatureStore(tmp_path / "ray"), device="cpu", progress=False)
    assert again.extracted == [] and set(again.features) == {"lenet5_mnist", "resnet20_cifar10"}


def test_a_worker_killed_mid_write_is_retried_and_leaves_no_torn_entry(tmp_path):
    """SIGKILL the Ray worker (its pid names the entry's temporary folder) while it writes features."""
    slow = load_zoo(ZOO, only=["mobilenetv2_100_224_imagenet_quant"])  # 224 px, batch 2: seconds of work
    ds = open_dataset(CIFAR, split="train", max_per_class=3, seed=0)
    cache = tmp_path / "cache"
    result: dict = {}

    def run() -> None:
        result["report"] = extract_on(
            RAY, slow, ds, store=FeatureStore(cache), device="cpu", batch_size=2, progress=False
        )

    driver = threading.Thread(target=run)
    driver.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and driver.is_alive():
        for part in cache.glob(".tmp/*/features.npy"):
            killed = int(part.parent.name.split("-")[-2])  # {host}-{pid}-{uuid}
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.01)
    driver.join(timeout=300)
    assert killed is not None, "the task finished before a worker could be killed"
    report = result["report"]
    assert report.failures == {} and report.extracted == ["mobilenetv2_100_224_imagenet_quant"]
    entries = [p for p in cache.iterdir() if p.name != ".tmp"]
    assert all((e / "meta.json").is_file() for d in entries for e in d.iterdir())  # no torn entry
    FeatureStore(cache).clean_stale()  # the killed worker's folder (if the retry did not remove it already)
    assert not any((cache / ".tmp").iterdir())
    local = _extract_like_a_worker(slow, ds, tmp_path / "local", batch_size=2)
    _same_entries(local.features, report.features)


def test_a_failing_model_is_reported_while_the_others_finish(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a torchscript file")
    entries = yaml.safe_load(ZOO.read_text())
    good = next(e for e in entries if e["name"] == "lenet5_mnist")
    good["file"] = str(ZOO.parent / good["file"])
    zoo_file = tmp_path / "zoo.yaml"
    zoo_file.write_text(yaml.safe_dump([{**good, "name": "broken", "file": "broken.pt"}, good]))
    cache = tmp_path / "cache"
    args = ["extract", "--models", str(zoo_file), "--data", str(MNIST), "--max-per-class", "2",
            "--cache-dir", str(cache), "--device", "cpu", "--executor", "ray", "--jobs", "2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "failed: broken:" in out and "not a loadable TorchScript file" in out
    assert [e.model for e in FeatureStore(cache).entries()] == ["lenet5_mnist"]


def test_ctrl_c_keeps_what_finished_and_exits_130(tmp_path, monkeypatch):
    """Ctrl-C on the driver after the first task finished: that model's entry stays, the running task is
    cancelled, the command exits 130; a rerun extracts only the other model."""
    two = ["resnet20_cifar10", "lenet5_mnist"]  # zoo order: the order the tasks go out with --jobs 1
    cache = tmp_path / "cache"
    args = ["extract", "--models", str(ZOO), "--data", str(MNIST), "--max-per-class", "2",
            "--cache-dir", str(cache), "--device", "cpu", "--executor", "ray", "--jobs", "1",
            "--model", two[0], "--model", two[1]]  # fmt: skip
    wait, finished = ray.wait, []

    def interrupted_wait(*a, **k):
        if finished:  # the second task is running: the user presses Ctrl-C
            raise KeyboardInterrupt
        ready, rest = wait(*a, **k)
        finished.extend(ready)
        return ready, rest

    with monkeypatch.context() as m:
        m.setattr(ray, "wait", interrupted_wait)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "finished work is kept" in " ".join(result.output.split())
    assert [e.model for e in FeatureStore(cache).entries()] == [two[0]]  # complete; nothing torn
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert sorted(e.model for e in FeatureStore(cache).entries()) == sorted(two)


def test_ray_fine_tuning_log_resumes_and_matches_local(tmp_path):
    zoo = load_zoo(ZOO, only=["lenet5_mnist", "resnet20_cifar10"])
    train = open_dataset(SIGNS, split="train", max_per_class=4, seed=0)
    test = open_dataset(SIGNS, split="test", max_per_class=4, seed=0)
    protocol = Protocol(lrs=(1e-2, 1e-3), steps=3, final_steps=4, batch_size=8, seeds=(0, 1))
    log = tmp_path / "ray.jsonl"
    first = finetune_on(RAY, zoo, train, test, protocol=protocol, log=log, device="cpu", progress=False)
    assert first.failures == {} and first.runs_done == 8  # 2 models x (2 grid + 2 seeds)
    again = finetune_on(RAY, zoo, train, test, protocol=protocol, log=log, device="cpu", progress=False)
    assert (again.runs_done, again.runs_cached) == (0, 8) and again.accuracy == first.accuracy
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + "\n")  # interrupted after 3 runs
    resumed = finetune_on(RAY, zoo, train, test, protocol=protocol, log=log, device="cpu", progress=False)
    assert (resumed.runs_done, resumed.runs_cached) == (5, 3) and resumed.accuracy == first.accuracy
    local = finetune(zoo, train, test, protocol=protocol, log=tmp_path / "local.jsonl", progress=False)
    assert local.accuracy == first.accuracy and local.chosen == first.chosen

    def by_key(path):
        return {r["key"]: r["accuracy"] for r in map(json.loads, path.read_text().splitlines())}

    assert by_key(log) == by_key(tmp_path / "local.jsonl")  # every run, seed for seed


def test_rank_extracts_through_ray_and_scores_like_local(tmp_path):
    """rank --executor ray: missing features come from Ray tasks; the scores equal a local extraction's."""
    two = ["lenet5_mnist", "resnet20_cifar10"]
    kwargs = {"models": ZOO, "only": two, "max_per_class": 3, "device": "cpu", "metrics": ["logme", "leep"]}
    board = rank(MNIST, cache=tmp_path / "ray", executor=RAY, **kwargs)
    assert board.failures == {} and sorted(board.models) == sorted(two)
    assert sorted(e.model for e in FeatureStore(tmp_path / "ray").entries()) == sorted(two)
    zoo = load_zoo(ZOO, only=two)
    ds = open_dataset(MNIST, split="train", max_per_class=3, seed=0)
    _extract_like_a_worker(zoo, ds, tmp_path / "local")
    local = rank(MNIST, cache=tmp_path / "local", **kwargs)  # every feature cached: scored only
    assert {r.model: r.scores for r in local.rows} == {r.model: r.scores for r in board.rows}


def test_executor_options_are_checked_before_any_work(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["extract", "--models", str(ZOO), "--data", str(MNIST), "--jobs", "2"])
    assert result.exit_code == 2 and "add --executor ray" in " ".join(result.output.split())
    (tmp_path / "feats").mkdir()
    for cmd in (["rank", "--data", "mnist"], ["evaluate", "--ground-truth", str(tmp_path / "gt.csv")]):
        result = CliRunner().invoke(app, [*cmd, "--features", str(tmp_path / "feats"), "--executor", "ray"])
        assert result.exit_code == 2, result.output
        assert "--features needs none: drop --executor ray" in " ".join(result.output.split())
    with pytest.raises(InputError, match="--threads-per-job must be an integer >= 1"):
        Executor("ray", threads_per_job=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match=r"pip install 'transfersel\[ray\]'"):
        TaskPool(RAY, device="cpu", title="x").__enter__()
