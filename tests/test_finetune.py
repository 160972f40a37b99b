"""Ground truth by fine-tuning: real models on tiny subsets of the shared datasets, resume, the run log."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED
from typer.testing import CliRunner

import transfersel.trainer as trainer
from transfersel.agreement import read_ground_truth
from transfersel.cli import app
from transfersel.data import open_dataset
from transfersel.errors import InputError
from transfersel.finetune import Protocol, RunLog, finetune
from transfersel.probe import split_validation
from transfersel.progress import StepProgress
from transfersel.trainer import trainable_tensors
from transfersel.zoo import load_zoo

pytestmark = pytest.mark.slow  # real models: `pytest -m 'not slow'` skips this file

ZOO = SHARED / "zoo" / "zoo.yaml"
CIFAR = SHARED / "datasets" / "cifar10"
MNIST = SHARED / "datasets" / "mnist"
TINY = Protocol(mode="full", lrs=(1e-2,), steps=25, batch_size=16)


@pytest.fixture(scope="module")
def cifar_tiny():
    return (
        open_dataset(CIFAR, split="train", max_per_class=12, seed=0),
        open_dataset(CIFAR, split="test", max_per_class=8, seed=0),
    )


def test_full_finetune_beats_chance_and_logs_every_run(cifar_tiny, tmp_path):
    train, test = cifar_tiny
    zoo = load_zoo(ZOO, only=["resnet20_cifar10"])
    rep = finetune(zoo, train, test, protocol=TINY, log=tmp_path / "runs.jsonl", progress=False)
    assert rep.failures == {}
    # CIFAR-10 source model on CIFAR-10 images: far above the 10 % of chance after 25 steps
    assert rep.accuracy["resnet20_cifar10"] > 40.0
    lines = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines] == ["val", "test"]
    assert lines[1]["accuracy"] == pytest.approx(rep.accuracy["resnet20_cifar10"])
    assert lines[0]["steps"] == 25 and lines[0]["measure"] == "top1"


def test_interrupted_run_resumes_without_redoing_finished_configs(cifar_tiny, tmp_path, monkeypatch):
    train, test = cifar_tiny
    zoo = load_zoo(ZOO, only=["resnet8_cifar10_mlperftiny", "resnet20_random_init"])
    protocol = Protocol(mode="full", lrs=(1e-2, 1e-3), steps=5, batch_size=16)
    calls: list[float] = []
    real_train = trainer._train

    def interrupted(*args, **kwargs):
        if len(calls) == 2:  # Ctrl-C during the third run (the first model's final retrain)
            raise KeyboardInterrupt
        calls.append(args[4])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(zoo, train, test, protocol=protocol, log=tmp_path / "runs.jsonl", progress=False)
    assert len(RunLog(tmp_path / "runs.jsonl").records) == 2  # both grid runs of the first model were kept

    calls.clear()
    monkeypatch.setattr(trainer, "_train", lambda *a, **k: calls.append(a[4]) or real_train(*a, **k))
    rep = finetune(zoo, train, test, protocol=protocol, log=tmp_path / "runs.jsonl", progress=False)
    assert rep.runs_cached == 2 and rep.runs_done == 4  # 1 final retrain + 3 runs of the second model
    assert len(calls) == 4
    assert set(rep.accuracy) == {"resnet8_cifar10_mlperftiny", "resnet20_random_init"}
    again = finetune(zoo, train, test, protocol=protocol, log=tmp_path / "runs.jsonl", progress=False)
    assert again.runs_done == 0 and again.accuracy == rep.accuracy


def test_torn_last_line_of_the_log_is_ignored(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"key": "a", "accuracy": 50.0}) + "\n" + '{"key": "b", "accur')
    log = RunLog(path)
    assert set(log.records) == {"a"}


def test_one_broken_model_is_reported_and_the_others_go_on(cifar_tiny, tmp_path):
    train, test = cifar_tiny
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    zoo_file = tmp_path / "zoo.yaml"
    good = SHARED / "zoo" / "resnet20_cifar10.pt"
    common = "source: torchscript, input_size: [32, 32], mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]"
    entries = [f"- {{name: broken, file: broken.pt, {common}}}", f"- {{name: ok, file: {good}, {common}}}"]
    zoo_file.write_text("\n".join(entries) + "\n")
    rep = finetune(
        load_zoo(zoo_file),
        train,
        test,
        protocol=Protocol(lrs=(1e-2,), steps=2),
        log=tmp_path / "l.jsonl",
        progress=False,
    )
    assert "not a loadable TorchScript file" in rep.failures["broken"]
    assert set(rep.accuracy) == {"ok"}


def test_quantised_torchscript_weights_become_trainable_with_the_same_forward():
    entry = load_zoo(ZOO, only=["mobilenetv1_025_128_imagenet"])[0]
    loaded = entry.load()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = loaded.forward(x)[0]
    assert not list(loaded.module.parameters())  # the converted graph keeps its weights as uint8 buffers
    tensors = trainable_tensors(loaded.module)
    assert tensors and all(t.requires_grad and t.dtype == torch.float32 for t in tensors)
    feats = loaded.forward(x)[0]
    torch.testing.assert_close(feats.detach(), before)
    feats.sum().backward()
    assert sum(int(t.grad is not None and t.grad.abs().sum() > 0) for t in tensors) > len(tensors) // 2


def test_first_step_leaves_the_backbone_alone_and_clips_the_head(cifar_tiny):
    """The zero head sends no gradient into the backbone on step 1; the head's step is bounded by the clip
    (Nesterov's first step moves by (1 + momentum)·lr·g, with ‖g‖ ≤ grad_clip)."""
    train, _ = cifar_tiny
    entry = load_zoo(ZOO, only=["resnet8_cifar10_mlperftiny"])[0]
    loaded = entry.load()
    x = trainer._decode_all(train, entry)[:32]
    y = torch.as_tensor(train.labels[:32])
    probe = loaded.normalise(x[:4])
    with torch.no_grad():
        before = loaded.forward(probe)[0].clone()
    protocol = Protocol(mode="full", steps=1, batch_size=32, augment=False, grad_clip=0.01)
    lr = 10.0  # large enough that an unclipped step would move the head by far more than the bound
    cpu, quiet = torch.device("cpu"), StepProgress(False)
    head, diverged = trainer._train(
        loaded, x, y, 10, lr, 0.0, 1, protocol, 0, cpu, quiet, loss_fn=torch.nn.functional.cross_entropy
    )
    assert not diverged
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward(probe)[0], before)
        moved = torch.cat([head.weight.flatten(), head.bias]).norm()
    assert 0 < moved <= 1.9 * lr * 0.01 * (1 + 1e-5)


def test_linear_probe_ground_truth_feeds_rank(tmp_path):
    runner = CliRunner()
    out = tmp_path / "gt.csv"
    args = [
        "finetune", "--models", str(ZOO), "--data", str(MNIST), "--mode", "linear",
        "--model", "lenet5_mnist", "--model", "resnet20_random_init",
        "--max-per-class", "20", "--max-test-per-class", "10", "--C", "0.1", "--C", "1",
        "--out", str(out), "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    gt = read_ground_truth(out).accuracy["mnist"]
    assert gt["lenet5_mnist"] > 85.0 > gt["resnet20_random_init"]  # MNIST's own model vs an untrained one
    res = runner.invoke(app, args)  # everything comes from the log and the cache
    assert res.exit_code == 0 and "0 run(s) computed, 6 from the log" in res.output
    rank = runner.invoke(
        app,
        ["rank", "--data", str(MNIST), "--models", str(ZOO), "--only", "lenet5_mnist",
         "--only", "resnet20_random_init", "--max-per-class", "20", "--metric", "logme",
         "--ground-truth", str(out), "--cache", str(tmp_path / "cache")],
    )  # fmt: skip
    assert rank.exit_code == 0, rank.output
    assert "lenet5_mnist" in rank.output


def test_validation_split_is_stratified_and_disjoint():
    y = np.repeat(np.array([5, 7, 9]), [10, 20, 3])
    fit, val = split_validation(y, 0.2, seed=0)
    assert np.intersect1d(fit, val).size == 0 and len(fit) + len(val) == len(y)
    assert np.bincount(y[val])[[5, 7, 9]].tolist() == [2, 4, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "partial"}, "--mode must be one of full, linear"),
        ({"lrs": (0.0,)}, "learning rates must be positive"),
        ({"val_fraction": 1.0}, "--val-fraction must be in (0, 1)"),
        ({"steps": 0}, "--steps must be >= 1"),
        ({"grad_clip": -1.0}, "--grad-clip must be a positive number"),
    ],
)
def test_bad_protocol_is_one_clear_error(kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Protocol(**kwargs)


def test_cli_same_train_and_test_is_a_one_line_error(tmp_path):
    flat = tmp_path / "flat"
    for c in ("a", "b"):
        (flat / c).mkdir(parents=True)
    src = sorted((MNIST / "train" / "0").iterdir())[:2]
    for i, p in enumerate(src):
        for c in ("a", "b"):
            (flat / c / f"{i}.png").write_bytes(p.read_bytes())
    res = CliRunner().invoke(
        app, ["finetune", "--models", str(ZOO), "--data", str(flat), "--model", "lenet5_mnist"]
    )
    assert res.exit_code == 2
    assert "are the same images" in res.output and "Traceback" not in res.output


def test_benchmark_zoo_caps_sizes(tmp_path):
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    from benchmark_offline import zoo_64px

    sizes = {e.name: e.preprocess().size for e in load_zoo(zoo_64px(tmp_path))}
    assert sizes["lenet5_mnist"] == (28, 28) and sizes["efficientnet_lite2_imagenet"] == (64, 64)
    assert sizes["resnet20_cifar10"] == (32, 32)
    assert all(p.is_file() for e in load_zoo(tmp_path / "zoo_64px.yaml") for p in e.weight_files())
