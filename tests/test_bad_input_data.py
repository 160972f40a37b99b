"""Bad dataset inputs: symlink loops, 16-bit and odd-mode images, non-image files, binary files passed as a
dataset, --workers -1; and a run killed on such a dataset that resumes cleanly. Real CIFAR-10 images."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED
from PIL import Image
from typer.testing import CliRunner

from transfersel.cli import app
from transfersel.data import open_dataset
from transfersel.errors import InputError, TransferabilityWarning
from transfersel.extract import decode, extract, to_8bit
from transfersel.store import FeatureStore
from transfersel.zoo import Preprocess, load_zoo

ZOO = SHARED / "zoo" / "zoo.yaml"
CIFAR = SHARED / "datasets" / "cifar10" / "train"


def small_copy(dest: Path, classes: int = 3, per_class: int = 10) -> Path:
    for c in sorted(os.listdir(CIFAR))[:classes]:
        (dest / c).mkdir(parents=True)
        for f in sorted(os.listdir(CIFAR / c))[:per_class]:
            shutil.copy(CIFAR / c / f, dest / c / f)
    return dest


def test_symlink_loops_and_links_to_other_classes_count_each_file_once(tmp_path):
    root = small_copy(tmp_path / "ds")
    a, b, c = sorted(os.listdir(root))
    os.symlink("..", root / a / "loop")  # the dataset root: a loop through every class
    os.symlink(f"../{c}", root / b / "other")  # another class's folder
    os.symlink("loop", root / a / "loop2")  # a link to a link of the loop
    first = sorted(os.listdir(root / a))[0]
    os.symlink(first, root / a / "again.png")  # the same file twice
    with pytest.warns(TransferabilityWarning, match="symlinked folder"):
        ds = open_dataset(root)
    assert len(ds) == 30 and np.bincount(ds.labels).tolist() == [10, 10, 10]
    for p, y in zip(ds.paths, ds.labels, strict=True):
        assert p.resolve().parent.name == ds.classes[y]  # every image labelled by its own class


def test_symlinked_folder_outside_the_dataset_is_followed(tmp_path):
    """Linking class folders (or subfolders) from elsewhere is a normal layout and keeps working."""
    store = small_copy(tmp_path / "elsewhere", classes=2, per_class=4)
    root = tmp_path / "ds"
    root.mkdir()
    for c in os.listdir(store):
        os.symlink(store / c, root / c)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = open_dataset(root)
    assert len(ds) == 8


def gradient16() -> np.ndarray:
    """A 40x48 16-bit grey image spanning 0..65535 (what PIL's convert("L") clips to almost white)."""
    ramp = np.linspace(0, 65535, 40 * 48).round().astype(np.uint16)
    return ramp.reshape(40, 48)


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    a = gradient16()
    Image.fromarray(a).save(tmp_path / "g16.png")
    expected = np.round(a / 257).astype(np.uint8)
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
        grey = np.asarray(to_8bit(im, "L"))
        rgb = np.asarray(to_8bit(im, "RGB"))
    assert np.abs(grey.astype(int) - expected).max() <= 1 and grey.mean() == pytest.approx(127.5, abs=1)
    assert (rgb == grey[..., None]).all()
    Image.fromarray(expected, "L").save(tmp_path / "g8.png")  # its 8-bit twin decodes the same
    pre = Preprocess((24, 24), (24, 24), "bilinear", 3, (0.5,) * 3, (0.25,) * 3)
    t16, t8 = decode(tmp_path / "g16.png", pre), decode(tmp_path / "g8.png", pre)
    assert np.abs(t16.numpy().astype(int) - t8.numpy().astype(int)).max() <= 1


def test_odd_modes_and_non_images_are_converted_or_skipped_and_listed(tmp_path):
    root = small_copy(tmp_path / "ds", classes=2, per_class=3)
    a, b = sorted(os.listdir(root))
    Image.fromarray(gradient16()).save(root / a / "g16.png")
    Image.fromarray(gradient16().astype(np.float32) / 65535, "F").save(root / a / "float.tiff")
    Image.new("CMYK", (20, 20), (10, 200, 30, 0)).save(root / b / "cmyk.jpg")
    Image.new("P", (20, 20), 3).save(root / b / "palette.png")
    (root / b / "random.png").write_bytes(np.random.default_rng(0).bytes(2000))  # not an image
    (root / b / "notes.txt").write_text("not an image, not listed")
    ds = open_dataset(root)
    assert len(ds) == 11  # .txt ignored
    report = extract(load_zoo(ZOO, only=["resnet20_cifar10"]), ds, store=FeatureStore(tmp_path / "c"),
                     progress=False)  # fmt: skip
    assert sorted(Path(p).name for p in report.skipped) == ["float.tiff", "random.png"]
    assert "mode F" in report.skipped[str(root / a / "float.tiff")]
    cf = report.features["resnet20_cifar10"]
    assert cf.features.shape[0] == 9 and np.isfinite(cf.features).all()


@pytest.mark.parametrize("kind", ["binary", "binary_csv", "png_as_dataset", "missing", "csv_no_files"])
def test_non_dataset_inputs_get_one_line_input_errors(tmp_path, kind):
    target = tmp_path / {"binary_csv": "data.csv", "csv_no_files": "list.csv", "png_as_dataset": "x.png"}.get(
        kind, "blob"
    )
    if kind in ("binary", "binary_csv"):
        target.write_bytes(np.random.default_rng(1).bytes(5000) + b"\x00\xff")
    elif kind == "png_as_dataset":
        shutil.copy(next(iter((CIFAR / "cat").iterdir())), target)
    elif kind == "csv_no_files":
        target.write_text("path,label\nnope/a.png,cat\nnope/b.png,dog\n")
    with pytest.raises(InputError):
        open_dataset(target)
    result = CliRunner().invoke(app, ["extract", "--models", str(ZOO), "--data", str(target),
                                      "--cache-dir", str(tmp_path / "c")])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_negative_workers_is_a_one_line_error(tmp_path):
    root = small_copy(tmp_path / "ds", classes=2, per_class=1)
    args = ["--workers", "-1", "--model", "resnet20_cifar10", "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(app, ["extract", "--models", str(ZOO), "--data", str(root), *args])
    assert result.exit_code == 2 and "workers must be an integer >= 0" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_run_killed_on_a_faulty_dataset_leaves_no_torn_entry_and_resumes(tmp_path):
    """A dataset with a symlink loop and a corrupt image; SIGKILL while the entry is being written."""
    root = small_copy(tmp_path / "ds")
    os.symlink("..", root / sorted(os.listdir(root))[0] / "loop")
    (root / sorted(os.listdir(root))[1] / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    cache, model = tmp_path / "cache", "mobilenetv2_100_224_imagenet_quant"  # ~1 s of work on 31 images
    cmd = [sys.executable, "-m", "transfersel", "extract", "--models", str(ZOO), "--data", str(root),
           "--batch-size", "2", "--cache-dir", str(cache), "--model", model]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not list(cache.glob(".tmp/*/features.npy")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    store = FeatureStore(cache)
    assert store.entries() == []  # nothing torn is visible
    with pytest.warns(TransferabilityWarning, match="symlinked folder"):
        ds = open_dataset(root)
    rerun = extract(load_zoo(ZOO, only=[model]), ds, store=store, progress=False)
    assert (
        rerun.extracted == [model]
        and rerun.damaged == {}
        and list(rerun.skipped) == [str(root / sorted(os.listdir(root))[1] / "corrupt.png")]
    )
    assert rerun.features[model].features.shape == (30, 1280)
    assert store.lookup(ds, load_zoo(ZOO, only=[model])[0])[1] is None
    assert not any((cache / ".tmp").iterdir())
