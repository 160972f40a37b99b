"""Datasets: ImageFolder with and without splits, CSV, deterministic order and subsampling, fingerprints."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import SHARED

from transfersel.data import open_dataset
from transfersel.errors import InputError

MNIST = SHARED / "datasets" / "mnist"


def test_imagefolder_splits_order_and_labels():
    ds = open_dataset(MNIST, split="test")
    assert ds.name == "mnist" and ds.split == "test" and ds.root == MNIST / "test"
    assert len(ds) == 900 and ds.classes == [str(d) for d in range(10)]
    assert ds.labels.dtype == np.int64 and np.bincount(ds.labels).tolist() == [90] * 10
    assert all(p.parent.name == ds.classes[y] for p, y in zip(ds.paths, ds.labels, strict=True))
    assert ds.relpaths() == sorted(ds.relpaths(), key=lambda r: (int(r.split("/")[0]), r))
    assert open_dataset(MNIST, split="train").fingerprint != ds.fingerprint
    with pytest.raises(InputError, match="has no split 'val'; use --split test or train"):
        open_dataset(MNIST, split="val")


def test_max_per_class_is_a_seeded_subset_in_dataset_order():
    full = open_dataset(MNIST)
    a = open_dataset(MNIST, max_per_class=3, seed=0)
    assert np.bincount(a.labels).tolist() == [3] * 10
    assert a.paths == open_dataset(MNIST, max_per_class=3, seed=0).paths
    assert a.paths != open_dataset(MNIST, max_per_class=3, seed=1).paths
    order = [full.paths.index(p) for p in a.paths]
    assert order == sorted(order) and a.fingerprint != full.fingerprint


def test_folder_without_splits_csv_and_fingerprint_changes(tmp_path):
    src = open_dataset(MNIST, max_per_class=2)
    root = tmp_path / "digits"
    for p in src.paths:
        (root / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, root / p.parent.name / p.name)
    ds = open_dataset(root)  # no train/ folder: the whole folder, split None
    assert ds.split is None and ds.relpaths() == src.relpaths() and ds.labels.tolist() == src.labels.tolist()
    rows = ["path,label"] + [f"digits/{r},{r.split('/')[0]}" for r in ds.relpaths()]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    csv = open_dataset(tmp_path / "list.csv")
    assert csv.name == "list" and [p.resolve() for p in csv.paths] == [p.resolve() for p in ds.paths]
    assert csv.labels.tolist() == ds.labels.tolist()
    before = ds.fingerprint
    p = ds.paths[0]
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))  # touched: same bytes
    assert open_dataset(root).fingerprint == before
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # a re-laid copy: new mtimes, same contents
    assert open_dataset(copy).fingerprint == before
    p.write_bytes(ds.paths[1].read_bytes())  # same name, other content
    assert open_dataset(root).fingerprint != before
    with pytest.raises(InputError, match="neither a folder nor a .csv"):
        open_dataset(tmp_path / "missing")
