"""Bad input through the CLI: each case exits non-zero with exactly one line of error that names the problem
and the fix (no traceback), or is accepted and gives the correct result. Zoo limits (names, YAML alias bombs,
input_size), hub models without network, and files that are not what their option expects."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml
from conftest import SHARED
from typer.testing import CliRunner

from transfersel.agreement import read_ground_truth
from transfersel.cli import app
from transfersel.zoo import ModelLoadError, _common, load_zoo

LENET = {"source": "torchscript", "file": str(SHARED / "zoo" / "lenet5_mnist.pt"), "input_size": [28, 28],
         "channels": 1, "mean": [0.1307], "std": [0.3081]}  # fmt: skip


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def one_error(result, *needles: str) -> str:
    """The single stderr line of a failed command; it must contain every needle."""
    assert result.exit_code not in (0, None), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.exception
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def zoo_file(tmp_path, text: str):
    path = tmp_path / "zoo.yaml"
    path.write_text(text)
    return path


# --- zoo limits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("x" * 300, ["is 300 characters long", "use at most 200 printable characters"]),
        ("a\x00b", ["'a\\x00b' holds a control character", "printable"]),
        ("a\nb", ["holds a control character"]),
        ("runs/a", ["not a single path component", "without '/'"]),
        ("runs\\a", ["not a single path component"]),
        ("..", ["not a single path component", "leading '.'"]),
    ],
)
def test_zoo_names_are_checked_up_front(tmp_path, name, needles):
    path = zoo_file(tmp_path, yaml.safe_dump([{"name": name, **LENET}]))
    one_error(run("zoo", path), "zoo.yaml entry #1: model name", *needles)


BOMB = """- name: m
  source: torchscript
  file: x.pt
  input_size: [28, 28]
  mean: [0, 0, 0]
  std: [1, 1, 1]
  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  labels: [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


@pytest.mark.parametrize(
    "text", [BOMB, BOMB.split("  a: ")[0] + "  loop: &x [1, *x]\n"], ids=["alias_bomb", "recursive_alias"]
)
def test_yaml_alias_bomb_and_recursive_alias_are_refused_fast(tmp_path, text):
    path = zoo_file(tmp_path, text)
    assert path.stat().st_size < 2000
    t0 = time.perf_counter()
    one_error(run("zoo", path), "entry 'm': its fields expand to more than 1,000,000 characters", "aliases")
    assert time.perf_counter() - t0 < 5


def test_small_yaml_aliases_are_still_accepted(tmp_path):
    text = "- &base {name: a, source: torchscript, file: x.pt, input_size: [28, 28], mean: [0], std: [1], " \
           "channels: 1}\n- {<<: *base, name: b}\n"  # fmt: skip
    result = run("zoo", zoo_file(tmp_path, text))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("size", "shown"), [([28.0, 28], "[28.0, 28]"), ([True, 28], "[True, 28]"), ([-28, 28], "[-28, 28]")]
)
def test_non_integer_input_size_is_refused_by_zoo_validation(tmp_path, size, shown):
    path = zoo_file(tmp_path, yaml.safe_dump([{"name": "m", **LENET, "input_size": size}]))
    one_error(
        run("zoo", path), f"entry 'm': field 'input_size' must be a list of 2 positive integers, got {shown}"
    )


# --- no network ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """An unreachable hub endpoint, empty hub caches, HF_HUB_OFFLINE unset, a fresh network state."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused at once
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(_common, "_NET", {"at": -float("inf"), "down": None})
    return tmp_path


HUB_ZOO = """models:
  - {name: resnet34, source: timm, model: resnet34.tv_in1k}
  - {name: mobilenet_v2, source: torchvision, model: mobilenet_v2, weights: IMAGENET1K_V1}
  - {name: clip_rn50, source: open_clip, model: RN50, pretrained: openai}
"""


def test_hub_models_without_network_fail_fast_with_one_line_each(no_network):
    path = zoo_file(no_network, HUB_ZOO)
    data = SHARED / "datasets" / "mnist"
    t0 = time.perf_counter()
    result = run("extract", "--models", path, "--data", data, "--max-per-class", "1", "--cache-dir",
                 no_network / "cache", "--device", "cpu")  # fmt: skip
    assert time.perf_counter() - t0 < 30  # was ~25 s of hub retries per model
    assert result.exit_code == 1, result.output
    assert (
        "Retry" not in result.output and "WARNING" not in result.output and "Traceback" not in result.output
    )
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert [line.split(":")[1].strip() for line in failed] == ["resnet34", "mobilenet_v2", "clip_rn50"]
    fixes = [
        "add 'file: /path/to/weights.pth' to the zoo entry",
        "add 'file: /path/to/mobilenet_v2-b0353104.pth'",
        "set 'pretrained: /path/to/open_clip_pytorch_model.bin' in the zoo entry",
    ]
    for line, fix in zip(failed, fixes, strict=True):
        assert "weights are not in the local cache and the network is unreachable (cannot connect to " in line
        assert fix in line and "HF_HUB_OFFLINE=1" in line
    other = [x for x in result.stderr.splitlines() if not x.startswith(("failed: ", "cache: ", "models "))]
    assert other == []  # nothing but the progress bar, one line per failed model and the cache folder


def test_hub_offline_env_fails_fast_naming_it(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = zoo_file(no_network, HUB_ZOO)
    (entry,) = load_zoo(path, only=["clip_rn50"])
    with pytest.raises(ModelLoadError, match="not in the local cache and HF_HUB_OFFLINE=1 is set; to run"):
        entry.load()


# --- misleading messages ----------------------------------------------------------------------------------


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "f.npy", rng.normal(size=(20, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(20) % 2)
    return tmp_path


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (b"a,b\n1,2\n", ["is not a NumPy .npy file (no .npy header)", "numpy.save", "numpy.loadtxt"]),
        (bytes(range(256)) * 2, ["is not a NumPy .npy file (no .npy header)"]),
        (b"", ["is not a NumPy .npy file (it is empty)"]),
    ],
    ids=["csv", "random_bytes", "empty"],
)
def test_a_non_npy_file_is_not_called_pickled(arrays, content, needles):
    (arrays / "bad.npy").write_bytes(content)
    line = one_error(run("score", arrays / "bad.npy", arrays / "y.npy"), "features file", *needles)
    assert "pickle" not in line


def test_truncated_and_object_npy(arrays):
    (arrays / "t.npy").write_bytes((arrays / "f.npy").read_bytes()[:150])
    one_error(
        run("score", arrays / "t.npy", arrays / "y.npy"), "is truncated", "save it again with numpy.save"
    )
    np.save(arrays / "o.npy", np.array([{"a": 1}] * 20, dtype=object))
    one_error(run("score", arrays / "f.npy", arrays / "o.npy"), "labels file", "not objects")


def test_a_directory_is_called_a_directory(arrays):
    (arrays / "feats").mkdir()
    one_error(
        run("score", arrays / "feats", arrays / "y.npy"),
        "features path",
        "is a directory; pass one .npy file",
    )
    one_error(run("score", arrays / "f.npy", arrays / "y.npy", "--logits", arrays / "feats"), "logits path",
              "is a directory")  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "needles"),
    [
        ((np.arange(40) % 2).reshape(20, 2), ["labels must be 1-D", "got shape (20, 2)"]),
        (np.zeros(20, int), ["1 distinct value(s)", "at least 2 classes"]),
        (np.arange(5), ["features has 20 rows but labels has 5", "one label per feature row"]),
    ],
    ids=["2d_labels", "one_class", "short_labels"],
)
def test_wrong_labels_give_one_line(arrays, labels, needles):
    np.save(arrays / "bad.npy", labels)
    one_error(run("score", arrays / "f.npy", arrays / "bad.npy", "-m", "all"), *needles)


def gt_csv(tmp_path, data: bytes):
    path = tmp_path / "gt.csv"
    path.write_bytes(data)
    return path


def test_ground_truth_with_a_utf8_bom_is_read(tmp_path):
    gt = read_ground_truth(gt_csv(tmp_path, b"\xef\xbb\xbfdataset,model,accuracy\nd,a,91.5\nd,b,80\n"))
    assert gt.accuracy == {"d": {"a": 91.5, "b": 80.0}}


def scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("\ufeffdataset,model,metric,score\n" + "".join(f"d,{m},logme,{s}\n" for m, s in
                    [("a", 1.0), ("b", 2.0), ("c", 3.0)]), encoding="utf-8")  # fmt: skip
    return path


def test_evaluate_accepts_bom_files(tmp_path):
    gt = gt_csv(tmp_path, b"\xef\xbb\xbfdataset,model,accuracy\nd,a,70\nd,b,80\nd,c,90\n")
    result = run("evaluate", "--ground-truth", gt, "--scores", scores_csv(tmp_path), "-m", "logme", "--out",
                 tmp_path / "out.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = [
        r for r in json.loads((tmp_path / "out.json").read_text())["correlations"] if r["dataset"] == "d"
    ]
    assert (
        row["weighted_tau"] == pytest.approx(1.0) and row["top1"] == row["best"] == "c"
    )  # scores and accuracies agree exactly


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (bytes(range(256)) * 4, ["ground-truth file", "is not UTF-8 text", "saved as UTF-8"]),
        (b"dataset,model,accuracy\nd,a,1\x00\n", ["is binary (it holds NUL bytes)"]),
        (b"", ["is empty", "header dataset,model,accuracy"]),
        (b"dataset,model,accuracy\n", ["has a header but no rows"]),
        (b"dataset,model,accuracy\nd\n", ["gt.csv:2: the row has no value for model, accuracy"]),
    ],
    ids=["binary", "nul", "empty", "header_only", "short_row"],
)
def test_bad_ground_truth_gives_one_line(tmp_path, data, needles):
    gt = gt_csv(tmp_path, data)
    one_error(run("evaluate", "--ground-truth", gt, "--scores", scores_csv(tmp_path)), *needles)


def test_ground_truth_directory(tmp_path):
    one_error(run("evaluate", "--ground-truth", tmp_path, "--scores", scores_csv(tmp_path)),
              "ground-truth path", "is a directory; pass a file: a CSV with the header")  # fmt: skip


def test_non_utf8_class_names_file(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_bytes(b"caf\xe9\nbar\n")
    one_error(run("embed", "--classes", names, "--embedder", "minilm", "-o", tmp_path / "e.npy"),
              "classes file", "is not UTF-8 text (byte 3)", "saved as UTF-8")  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "needles"),
    [
        ("binary", ["zoo file", "is not UTF-8 text", "pass a YAML list of model entries, saved as UTF-8"]),
        ("directory", ["zoo path", "is a directory; pass a file: a YAML list of model entries"]),
    ],
)
def test_zoo_file_that_is_binary_or_a_directory(tmp_path, kind, needles):
    path = tmp_path / "zoo.yaml"
    if kind == "binary":
        path.write_bytes(bytes(range(128, 256)) * 4)
    else:
        path.mkdir()
    one_error(run("zoo", path), *needles)


def test_features_option_given_a_file(arrays):
    one_error(run("rank", "--data", "d", "--features", arrays / "f.npy"), "feature directory",
              "is a file; pass the folder of {model}_d_feature.npy", "transfersel score")  # fmt: skip


class ConnectError(Exception):
    """Named like httpx's: the hub client's "cannot connect" error."""


def test_after_the_first_network_failure_the_rest_fail_fast_and_quietly(no_network, monkeypatch, capfd):
    import logging

    from huggingface_hub import constants

    monkeypatch.setattr(_common, "_probe", lambda: None)  # the probe says the network is up
    calls = []

    def build():
        calls.append(constants.HF_HUB_OFFLINE)
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 8s [Retry 4/5].")
        logging.error("Failed to download weights")  # open_clip logs on the root logger
        raise RuntimeError("download failed") from ConnectError("[Errno -2] Name or service not known")

    handlers = list(logging.root.handlers)
    with pytest.raises(ModelLoadError, match=r"the network is unreachable \(\[Errno -2\] Name or service"):
        _common._from_hub("timm model a", "add 'file: w.pth' to the zoo entry", build)
    with pytest.raises(ModelLoadError, match="unreachable .*; to run offline, add 'file: w.pth' to the zoo"):
        _common._from_hub("torchvision model b", "add 'file: w.pth' to the zoo entry", build, uncached=True)
    with pytest.raises(ModelLoadError, match="timm model c: weights are not in the local cache"):
        _common._from_hub("timm model c", "add 'file: w.pth' to the zoo entry", build)
    assert calls == [False, True]  # b never tried; c read only the hub cache (no retries)
    assert constants.HF_HUB_OFFLINE is False and logging.root.handlers == handlers
    assert "Retry" not in capfd.readouterr().err


def test_a_non_network_hub_failure_is_reported_as_it_is(no_network, monkeypatch):
    monkeypatch.setattr(_common, "_probe", lambda: None)

    def build():
        raise ValueError("state dict has unexpected key 'fc.bias'")

    with pytest.raises(
        ModelLoadError, match="timm model a could not be built \\(state dict has unexpected key"
    ):
        _common._from_hub("timm model a", "add 'file: w.pth' to the zoo entry", build)
    assert _common._NET["down"] is None


EXTRACT_MNIST = ["extract", "--models", SHARED / "zoo" / "zoo.yaml", "--data", SHARED / "datasets" / "mnist"]


@pytest.mark.parametrize("command", [["cache", "ls"], EXTRACT_MNIST], ids=["cache_ls", "extract"])
def test_cache_dir_that_is_a_file(arrays, command):
    one_error(
        run(*command, "--cache-dir", arrays / "f.npy"), "cache folder", "is a file; pass --cache-dir a folder"
    )
