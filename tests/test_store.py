"""The feature cache on its own: entries appear only when complete, skipped rows are compacted, rm works."""

from __future__ import annotations

import json

import numpy as np
from conftest import SHARED
from typer.testing import CliRunner

from transfersel.cli import app
from transfersel.data import open_dataset
from transfersel.store import FeatureStore
from transfersel.zoo import load_zoo

ZOO = SHARED / "zoo" / "zoo.yaml"


def test_writer_publishes_only_on_commit_and_compacts_skipped_rows(tmp_path):
    ds = open_dataset(SHARED / "datasets" / "mnist", max_per_class=1)  # 10 images
    (entry,) = load_zoo(ZOO, only=["lenet5_mnist"])
    store = FeatureStore(tmp_path)
    w = store.writer(ds, entry)
    rng = np.random.default_rng(0)
    feats, logits = rng.normal(size=(10, 5)).astype(np.float32), rng.normal(size=(10, 3)).astype(np.float32)
    w.write(np.arange(0, 6), feats[:6], logits[:6])
    assert store.get(ds, entry) is None and store.entries() == []  # half written: invisible
    w.write(np.arange(6, 10), feats[6:], logits[6:])
    keep = np.array([0, 1, 2, 4, 5, 6, 7, 8, 9])  # image 3 could not be read
    meta = {"model": entry.name, "classes": ds.classes, "dataset": ds.name, "skipped": [ds.relpaths()[3]]}
    cf = w.commit(keep, ds.labels[keep], meta)
    assert cf.path == store.entry_dir(ds, entry) and not w.tmp.exists()
    np.testing.assert_array_equal(cf.features, feats[keep])
    np.testing.assert_array_equal(cf.logits, logits[keep])
    assert cf.logits.dtype == np.float32 and cf.labels.tolist() == ds.labels[keep].tolist()
    assert json.loads((cf.path / "meta.json").read_text())["n"] == 9
    assert [e.model for e in FeatureStore(tmp_path).entries()] == ["lenet5_mnist"]
    w2 = store.writer(ds, entry)
    w2.write(np.arange(10), feats, logits)
    w2.abort()
    assert not w2.tmp.exists() and store.get(ds, entry).features.shape == (9, 5)


def test_cache_cli_ls_info_rm(tmp_path):
    ds = open_dataset(SHARED / "datasets" / "mnist", max_per_class=1)
    (entry,) = load_zoo(ZOO, only=["lenet5_mnist"])
    store = FeatureStore(tmp_path)
    w = store.writer(ds, entry)
    w.write(np.arange(10), np.ones((10, 4), np.float32), None)
    w.commit(np.arange(10), ds.labels, {"model": entry.name, "classes": ds.classes, "dataset": ds.name,
                                         "split": ds.split})  # fmt: skip
    run = CliRunner().invoke
    listed = run(app, ["cache", "ls", "--cache-dir", str(tmp_path), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.output)[0]["model"] == "lenet5_mnist"
    info = run(app, ["cache", "info", "lenet5_mnist", "--cache-dir", str(tmp_path)])
    assert info.exit_code == 0 and '"n": 10' in info.output
    assert run(app, ["cache", "info", "nope", "--cache-dir", str(tmp_path)]).exit_code == 2
    removed = run(app, ["cache", "rm", "--model", "lenet5_mnist", "--cache-dir", str(tmp_path)])
    assert removed.exit_code == 0 and "1 entry removed" in removed.output
    assert store.entries() == [] and store.get(ds, entry) is None
