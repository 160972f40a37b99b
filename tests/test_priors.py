"""Target-free priors (selection spec §4) on the shared zoo."""

from __future__ import annotations

import math

import pytest
import yaml
from conftest import SHARED

from transfersel.priors import PRIORS, count_parameters, prior_params, priors, priors_for_zoo
from transfersel.zoo import load_zoo

ZOO = SHARED / "zoo" / "zoo.yaml"


@pytest.fixture(scope="module")
def zoo():
    return {e.name: e for e in load_zoo(ZOO)}


def test_priors_of_the_shared_zoo(zoo):
    got = priors_for_zoo(list(zoo.values()), load=False)
    assert list(got) == list(zoo) and all(list(p) == list(PRIORS) for p in got.values())
    r20 = got["resnet20_cifar10"]
    assert r20["prior_params"] == pytest.approx(math.log10(269722))
    assert r20["prior_feature_dim"] == 6.0  # 64-d
    assert r20["prior_input_size"] == 10.0  # 32 x 32
    assert r20["prior_source_acc"] == 91.73  # "91.73 % on the lossless CIFAR-10 test set"
    assert got["efficientnet_lite2_imagenet"]["prior_source_acc"] == 77.6
    assert math.isnan(got["lenet5_mnist"]["prior_source_acc"])  # the zoo does not give it
    # higher = predicted better: the larger ImageNet model outranks the small CIFAR one on every size prior
    big = got["efficientnet_lite2_imagenet"]
    assert all(big[p] > r20[p] for p in ("prior_params", "prior_feature_dim", "prior_input_size"))


@pytest.mark.parametrize(
    ("name", "rel"),
    [("resnet20_cifar10", 0.0), ("mobilenetv1_025_128_imagenet", 1e-3)],  # TFLite graph: weights in buffers
)
def test_params_are_counted_when_the_zoo_does_not_give_them(tmp_path, zoo, name, rel):
    raw = next(e for e in yaml.safe_load(ZOO.read_text()) if e["name"] == name)
    given = raw.pop("params")
    raw["file"] = str(ZOO.parent / raw["file"])
    raw.pop("labels", None)
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump([raw]))
    (entry,) = load_zoo(path)
    assert math.isnan(prior_params(entry, load=False))
    assert count_parameters(entry.load().module) == pytest.approx(given, rel=rel)
    assert priors(entry)["prior_params"] == pytest.approx(math.log10(given), abs=1e-3)
