"""Feature extraction on the real shared zoo and datasets: equality with a direct forward pass, the cache
(hits load no model, data changes invalidate), crash safety under real signals, failures that do not stop the
run, shared decoding, sharding."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, SHARED
from PIL import Image
from typer.testing import CliRunner

from transfersel import extract as extract_mod
from transfersel.cli import app
from transfersel.data import open_dataset
from transfersel.extract import extract, parse_shard
from transfersel.store import FeatureStore
from transfersel.zoo import ModelEntry, load_zoo

pytestmark = pytest.mark.slow  # real models: `pytest -m 'not slow'` skips this file

ZOO = SHARED / "zoo" / "zoo.yaml"
CIFAR = SHARED / "datasets" / "cifar10"
SMALL = ["resnet20_cifar10", "resnet32_cifar10", "mobilenetv1_025_128_imagenet"]


@pytest.fixture(scope="module")
def cifar():
    return open_dataset(CIFAR, split="train", max_per_class=2)  # 20 images, 10 classes


def reference_forward(entry: ModelEntry, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The shared zoo README's own recipe (PIL resize, numpy scaling), all images in one batch."""
    s = entry.spec
    model = torch.jit.load(s["file"]).eval()
    mean, std = torch.tensor(s["mean"]).view(-1, 1, 1), torch.tensor(s["std"]).view(-1, 1, 1)
    xs = []
    for p in paths:
        img = Image.open(p).convert("RGB" if s["channels"] == 3 else "L")
        x01 = np.asarray(img.resize(s["input_size"][::-1], Image.BILINEAR), np.float32) / 255
        xs.append((torch.from_numpy(x01.reshape(*s["input_size"], -1)).permute(2, 0, 1) - mean) / std)
    with torch.no_grad():
        f, lg = model(torch.stack(xs))
    return f.numpy(), lg.numpy()


def test_features_equal_direct_forward_and_second_run_is_a_cache_hit(tmp_path, cifar, monkeypatch):
    zoo = load_zoo(ZOO, only=SMALL)  # two 32-px CIFAR ResNets share decoding; one 128-px MobileNet
    store = FeatureStore(tmp_path)
    decoded: list[Path] = []
    real = extract_mod.decode
    monkeypatch.setattr(extract_mod, "decode", lambda p, pre: decoded.append(p) or real(p, pre))
    report = extract(zoo, cifar, store=store, batch_size=8, progress=False)
    assert len(decoded) == 2 * len(cifar)  # once per image per preprocessing geometry
    assert report.failures == {} and report.skipped == {}
    assert list(report.features) == SMALL and report.extracted == SMALL
    for e in zoo:
        cf = report.features[e.name]
        f_ref, l_ref = reference_forward(e, cifar.paths)
        assert cf.features.dtype == np.float32 and cf.logits.dtype == np.float32
        np.testing.assert_allclose(cf.features, f_ref, rtol=1e-4, atol=1e-4 * np.abs(f_ref).max())
        np.testing.assert_allclose(cf.logits, l_ref, rtol=2e-3, atol=2e-3 * np.abs(l_ref).max())
        np.testing.assert_array_equal(cf.labels, cifar.labels)
        assert isinstance(cf.features, np.memmap)
        assert cf.meta["n"] == 20 and cf.meta["d"] == f_ref.shape[1] and cf.meta["weights_sha256"]
        assert cf.meta["dataset_fingerprint"] == cifar.fingerprint and cf.classes == cifar.classes

    def no_load(self):
        raise AssertionError("a cache hit must not load the model")

    monkeypatch.setattr(ModelEntry, "load", no_load)
    again = extract(zoo, open_dataset(CIFAR, split="train", max_per_class=2), store=store, progress=False)
    assert again.extracted == [] and again.failures == {}
    for name in SMALL:
        np.testing.assert_array_equal(again.features[name].features, report.features[name].features)
    assert len(store.entries()) == 3


def test_changing_the_dataset_invalidates_the_cache(tmp_path, cifar):
    data = tmp_path / "data"
    for p in cifar.paths[:6]:
        dst = data / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
    zoo = load_zoo(ZOO, only=["resnet20_cifar10"])
    store = FeatureStore(tmp_path / "cache")
    first = extract(zoo, open_dataset(data), store=store, progress=False)
    assert first.extracted == ["resnet20_cifar10"] and first.features["resnet20_cifar10"].meta["n"] == 6
    assert extract(zoo, open_dataset(data), store=store, progress=False).extracted == []
    victim = sorted(data.rglob("*.jpg"))[0]
    shutil.copy2(cifar.paths[10], victim)  # same name, other content
    changed = open_dataset(data)
    assert changed.fingerprint != first.features["resnet20_cifar10"].meta["dataset_fingerprint"]
    assert extract(zoo, changed, store=store, progress=False).extracted == ["resnet20_cifar10"]
    assert len(store.entries()) == 2


def test_corrupt_image_and_broken_model_are_reported_and_skipped(tmp_path, cifar):
    data = tmp_path / "data"
    for p in cifar.paths[:4]:
        dst = data / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
    bad = data / cifar.paths[0].parent.name / "zz_corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "broken.pt").write_bytes(b"not a torchscript file")
    entries = yaml.safe_load(ZOO.read_text())
    good = next(e for e in entries if e["name"] == "resnet20_cifar10")
    good["file"] = str(ZOO.parent / good["file"])
    broken = {**good, "name": "broken", "file": "broken.pt"}  # relative: resolves next to the zoo file
    zoo_file = tmp_path / "zoo.yaml"
    zoo_file.write_text(yaml.safe_dump([broken, good]))
    result = CliRunner().invoke(
        app, ["extract", "--models", str(zoo_file), "--data", str(data), "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "failed: broken:" in out and "not a loadable TorchScript file" in out
    assert "skipped 1 unreadable image" in out and "zz_corrupt.jpg" in out
    (cf,) = FeatureStore(tmp_path / "c").entries()
    assert cf.model == "resnet20_cifar10" and cf.features.shape == (4, 64)
    assert cf.meta["skipped"] == [f"{cifar.paths[0].parent.name}/zz_corrupt.jpg"]
    ds = open_dataset(data)
    keep = [i for i, p in enumerate(ds.paths) if p != bad]
    np.testing.assert_array_equal(cf.labels, ds.labels[keep])
    # the rerun only retries the broken model (still failing), the good one is a hit
    again = CliRunner().invoke(
        app, ["extract", "--models", str(zoo_file), "--data", str(data), "--cache-dir", str(tmp_path / "c")]
    )
    assert again.exit_code == 1 and "cached" in again.output


def test_shards_split_the_models_between_processes(tmp_path, cifar):
    zoo = load_zoo(ZOO, only=["resnet20_cifar10", "resnet8_cifar10_mlperftiny", "lenet5_mnist"])
    store = FeatureStore(tmp_path)
    a = extract(zoo, cifar, store=store, shard=parse_shard("1/2"), progress=False)
    b = extract(zoo, cifar, store=store, shard=(2, 2), workers=2, progress=False)  # decoding processes
    assert a.extracted == ["resnet20_cifar10", "lenet5_mnist"]
    assert b.extracted == ["resnet8_cifar10_mlperftiny"]
    np.testing.assert_array_equal(b.features["resnet8_cifar10_mlperftiny"].labels, cifar.labels)
    assert extract(zoo, cifar, store=store, progress=False).extracted == []
    with pytest.raises(ValueError, match="shard"):
        parse_shard("0/2")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_run_leaves_no_partial_entry_and_the_rerun_completes(tmp_path, sig):
    """Kill the CLI while the second model (a 224-px MobileNet, ~1 s of work) is being written."""
    cache = tmp_path / "cache"
    slow = "mobilenetv2_100_224_imagenet_quant"
    cmd = [sys.executable, "-m", "transfersel", "extract", "--models", str(ZOO), "--data", str(CIFAR),
           "--max-per-class", "3", "--batch-size", "2", "--cache-dir", str(cache),
           "--model", "resnet20_cifar10", "--model", slow]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        done = list(cache.glob("*/resnet20_cifar10-*/meta.json"))
        writing = list(cache.glob(".tmp/*/features.npy"))
        if done and writing:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and b"interrupted" in err
        assert not any((cache / ".tmp").iterdir())  # the partial entry was removed on the way out
    else:
        assert proc.returncode == -signal.SIGKILL
        assert any((cache / ".tmp").iterdir())  # left behind, but never visible as an entry
    store = FeatureStore(cache)
    assert [e.model for e in store.entries()] == ["resnet20_cifar10"]
    zoo = load_zoo(ZOO, only=["resnet20_cifar10", slow])
    rerun = extract(zoo, open_dataset(CIFAR, max_per_class=3), store=store, progress=False)
    assert rerun.extracted == [slow] and rerun.failures == {}
    assert rerun.features[slow].features.shape == (30, 1280)
    assert not any((cache / ".tmp").iterdir())  # the stale folder of the killed process is gone
