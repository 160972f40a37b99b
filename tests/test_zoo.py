"""Zoo files and the model sources: validation messages, the shared and repository zoos, and the timm,
torchvision and open_clip backends offline with tiny architectures and weight files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, SHARED
from PIL import Image
from typer.testing import CliRunner

from transfersel.cli import app
from transfersel.data import open_dataset
from transfersel.extract import extract
from transfersel.store import FeatureStore
from transfersel.zoo import ModelLoadError, ZooError, load_zoo

ZOO = SHARED / "zoo" / "zoo.yaml"


@pytest.fixture(scope="module")
def clothing():
    """10 photos, one per class, mostly 160x213: resize and centre crop matter."""
    return open_dataset(SHARED / "datasets" / "clothing", split="test", max_per_class=1)


def write_zoo(tmp_path, entries):
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def test_shared_zoo_loads_as_is_and_model_restricts(tmp_path):
    zoo = load_zoo(ZOO)
    assert len(zoo) == 18 and {e.source for e in zoo} == {"torchscript"}
    assert all((SHARED / "zoo").resolve() in Path(e.spec["file"]).parents for e in zoo)
    assert zoo[0].spec["sanity_accuracy"] > 0.5  # descriptive keys are kept
    only = load_zoo(ZOO, only=["lenet5_mnist", "resnet20_cifar10"])
    assert [e.name for e in only] == ["resnet20_cifar10", "lenet5_mnist"]  # zoo order
    pre = only[1].preprocess()
    assert pre.channels == 1 and pre.size == (28, 28) and pre.mean == (0.1307,)
    with pytest.raises(ZooError, match="nope not in"):
        load_zoo(ZOO, only=["nope"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "m", "source": "torchscript", "input_size": [32, 32], "mean": [0], "std": [1]},
         "entry 'm': field 'file' is missing"),
        ({"name": "m", "source": "torchscript", "file": "a.pt", "input_size": [32, 32], "mean": [0, 0],
          "std": [1, 1, 1]}, "entry 'm': field 'mean' must be a list of 3 numbers"),
        ({"name": "m", "source": "timm", "model": "no_such_net"}, "entry 'm': timm has no architecture"),
        ({"name": "m", "source": "torchvision", "model": "resnet18", "weights": "BAD"},
         "entry 'm': field 'weights': resnet18 has no weights 'BAD'"),
        ({"name": "m", "source": "caffe"}, "entry 'm': unknown source 'caffe'"),
        ({"source": "timm"}, "entry #1: field 'name'"),
    ],
)  # fmt: skip
def test_invalid_entries_name_the_entry_and_the_field(tmp_path, entry, message):
    with pytest.raises(ZooError, match=message):
        load_zoo(write_zoo(tmp_path, [entry]))


def test_duplicate_names_and_relative_paths(tmp_path):
    e = {"name": "m", "source": "torchscript", "file": "w/m.pt", "input_size": [8, 8], "mean": [0] * 3,
         "std": [1] * 3}  # fmt: skip
    with pytest.raises(ZooError, match="duplicate model names m"):
        load_zoo(write_zoo(tmp_path, [e, e]))
    (zoo,) = load_zoo(write_zoo(tmp_path, {"models": [e]}))
    assert zoo.spec["file"] == str((tmp_path / "w" / "m.pt").resolve())


def test_repository_zoo_validates_and_lists_offline():
    zoo = load_zoo(REPO / "model_zoo.yaml")
    names = [e.name for e in zoo]
    paper = ["resnet34", "resnet50", "resnet101", "resnet152", "densenet121", "densenet169", "densenet201",
             "inception_v3", "mobilenet_v2", "mnasnet1_0", "googlenet"]  # fmt: skip
    assert names[:11] == paper and {e.source for e in zoo[11:]} == {"open_clip"}
    assert zoo[7].preprocess().size == (299, 299)
    result = CliRunner().invoke(app, ["zoo", str(REPO / "model_zoo.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(n in result.output for n in paper)


def test_offline_hub_model_without_weights_fails_with_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty hub cache
    (e,) = load_zoo(REPO / "model_zoo.yaml", only=["resnet34"])
    with pytest.raises(ModelLoadError) as info:
        e.load()
    msg = str(info.value)
    assert "\n" not in msg and "offline" in msg and "file: /path/to/weights.pth" in msg


def features_agree(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.slow
def test_timm_local_file_through_pretrained_cfg(tmp_path, clothing):
    import timm
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False).eval()
    torch.save(model.state_dict(), tmp_path / "resnet10t.pth")
    zoo = load_zoo(write_zoo(tmp_path, [{"name": "r10", "source": "timm", "model": "resnet10t",
                                         "file": "resnet10t.pth"}]))  # fmt: skip
    ds = clothing
    report = extract(zoo, ds, store=FeatureStore(tmp_path / "c"), progress=False)
    assert report.failures == {}
    cf = report.features["r10"]
    t = create_transform(**resolve_data_config(model=model))  # timm's own eval pipeline
    x = torch.stack([t(Image.open(p).convert("RGB")) for p in ds.paths])
    with torch.no_grad():
        fmap = model.forward_features(x)
        feats, logits = model.forward_head(fmap, pre_logits=True), model(x)
    assert cf.features.shape == (10, 512) and cf.logits.shape == (10, 1000)
    features_agree(cf.features, feats.numpy())
    features_agree(cf.logits, logits.numpy())  # stored as float32
    assert cf.meta["preprocess"]["size"] == [176, 176] and cf.meta["preprocess"]["interpolation"] == "bicubic"


@pytest.mark.slow
def test_torchvision_local_state_dict(tmp_path, clothing):
    from torchvision import models

    torch.manual_seed(0)
    model = models.mobilenet_v3_small(weights=None).eval()
    torch.nn.init.normal_(model.classifier[-1].weight, std=1.0)  # logits on a float16-representable scale
    torch.save(model.state_dict(), tmp_path / "mnv3.pth")
    entry = {"name": "mnv3", "source": "torchvision", "model": "mobilenet_v3_small", "file": "mnv3.pth"}
    zoo = load_zoo(write_zoo(tmp_path, [entry]))
    ds = clothing
    cf = extract(zoo, ds, store=FeatureStore(tmp_path / "c"), progress=False).features["mnv3"]
    t = models.MobileNet_V3_Small_Weights.DEFAULT.transforms()
    x = torch.stack([t(Image.open(p).convert("RGB")) for p in ds.paths])
    with torch.no_grad():
        pooled = torch.flatten(model.avgpool(model.features(x)), 1)
        feats = model.classifier[:-1](pooled)  # the input of the last Linear
        logits = model.classifier[-1](feats)
    assert cf.features.shape == (10, 1024) and cf.logits.shape == (10, 1000)
    features_agree(cf.features, feats.numpy())
    features_agree(cf.logits, logits.numpy())  # stored as float32


@pytest.mark.slow
def test_open_clip_custom_config_and_local_checkpoint(tmp_path, clothing):
    import open_clip

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "tinyclip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tinyclip.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("tinyclip")
    torch.save(model.state_dict(), tmp_path / "tinyclip.pt")
    entry = {"name": "clip", "source": "open_clip", "model": "tinyclip", "config": "tinyclip.json",
             "pretrained": "tinyclip.pt"}  # fmt: skip
    zoo = load_zoo(write_zoo(tmp_path, [entry]))
    ds = clothing
    cf = extract(zoo, ds, store=FeatureStore(tmp_path / "c"), progress=False).features["clip"]
    x = torch.stack([preprocess(Image.open(p)) for p in ds.paths])
    with torch.no_grad():
        want = model.eval().encode_image(x)
    assert cf.features.shape == (10, 16) and cf.logits is None
    features_agree(cf.features, want.numpy())


@pytest.mark.slow
def test_timm_file_remaps_old_torchvision_key_names(tmp_path):
    """torchvision's DenseNet files use old key names (``norm.1``); timm's filter remaps them on load."""
    import re

    from torchvision import models

    torch.manual_seed(0)
    tv = models.densenet121(weights=None).state_dict()
    tv = {k: v for k, v in tv.items() if not k.endswith("num_batches_tracked")}  # not in the 2017 files
    old = {re.sub(r"(norm|relu|conv)([12])\.", r"\1.\2.", k): v for k, v in tv.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save(old, tmp_path / "d121-old-keys.pth")
    entry = {"name": "d", "source": "timm", "model": "densenet121.tv_in1k", "file": "d121-old-keys.pth"}
    (e,) = load_zoo(write_zoo(tmp_path, [entry]))
    got = e.load().module.state_dict()
    assert tv.keys() <= got.keys()
    assert all(torch.equal(got[k], v) for k, v in tv.items())
