"""Out-of-core scoring (spec scale.md §2): streamed row blocks of a memmap equal the in-memory scores, and the
metrics that cannot stream score a seeded stratified subsample above their cap, say so once and record it."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from transfersel import metrics
from transfersel.errors import TransferabilityWarning
from transfersel.features import ModelFeatures
from transfersel.metrics import _linalg, check_inputs, get_metric
from transfersel.scoring import score_models

STREAMING = ["sfda", "logme", "emms", "hscore", "hscore_reg", "transrate", "gbc", "leep", "nce"]
STREAMING_POOL = ["ncti", "etran"]


@pytest.fixture(scope="module")
def mid(vectors: dict) -> dict:
    return vectors["mid_gauss"]  # 2000 × 256, 10 classes, 100-way logits


def _on_disk(vector: dict, tmp_path) -> dict:
    """The features and logits as memmapped float32 .npy files."""
    out = {}
    for key in ("features", "logits"):
        np.save(tmp_path / f"{key}.npy", vector[key].astype(np.float32))
        out[key] = np.load(tmp_path / f"{key}.npy", mmap_mode="r")
    return out


@pytest.fixture
def on_disk(mid: dict, tmp_path) -> dict:
    return _on_disk(mid, tmp_path)


def _score(name: str, features, logits, vector: dict):
    E = vector["label_embeddings"]
    inputs = check_inputs(features, vector["labels"], logits=logits, label_embeddings=E)
    metric = get_metric(name)
    return metric.compute_components(inputs) if metric.pool else metric.compute(inputs)


# mid_gauss (2000 × 256, 10 classes) for all; relu_gauss (1500 × 128, 8 classes) has classes of n_c ≥ D, which
# TransRate streams (mid_gauss's classes take the n_c × n_c side)
CASES = [("mid_gauss", n) for n in STREAMING + STREAMING_POOL] + [("relu_gauss", "transrate")]


@pytest.mark.parametrize(("vector", "name"), CASES)
def test_streamed_memmap_equals_in_memory(
    vector: str, name: str, vectors: dict, tmp_path, monkeypatch
) -> None:
    v, disk = vectors[vector], _on_disk(vectors[vector], tmp_path)
    in_memory = _score(name, np.array(disk["features"]), np.array(disk["logits"]), v)
    monkeypatch.setattr(_linalg, "BLOCK_BYTES", 1)  # every pass in blocks of MIN_BLOCK_ROWS = 256 rows
    blocks = list(_linalg.row_blocks(disk["features"]))
    assert len(blocks) > 5 and all(len(B) == _linalg.MIN_BLOCK_ROWS for _, B in blocks[:-1])
    streamed = _score(name, disk["features"], disk["logits"], v)
    if isinstance(in_memory, dict):
        assert streamed.keys() == in_memory.keys()
        for key in in_memory:
            assert streamed[key] == pytest.approx(in_memory[key], rel=1e-10, abs=0), key
    else:
        assert np.isfinite(in_memory)
        assert streamed == pytest.approx(in_memory, rel=1e-10, abs=0)


def test_sfda_never_builds_the_mixed_features(mid: dict, on_disk: dict, monkeypatch) -> None:
    """Stage 2 reads X̃ through a RowView: no (N, D) array is allocated while SFDA scores a memmap."""
    inputs = check_inputs(on_disk["features"], mid["labels"])
    N, D = inputs.X.shape
    assert inputs.centered_gram.shape == (D, D)  # the shared statistics first; then watch SFDA's own
    real_empty = np.empty

    def empty(shape, *args, **kwargs):
        assert tuple(np.atleast_1d(shape))[:2] != (N, D), "an N×D array was allocated"
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", empty)
    monkeypatch.setattr(_linalg, "BLOCK_BYTES", 1)
    assert 0 < get_metric("sfda").compute(inputs) <= 1


def test_leep_recomputes_its_softmax_when_too_large_to_keep(mid: dict, on_disk: dict, monkeypatch) -> None:
    """Above KEEP_BYTES LEEP's second pass recomputes θ from the memmapped logits, block by block: no N×K
    array, and the score of the kept, class-ordered θ (the in-memory path) to 1e-12."""
    import transfersel.metrics.leep as leep

    X, L = np.array(on_disk["features"]), np.array(on_disk["logits"])
    kept = get_metric("leep")(X, mid["labels"], logits=L)
    inputs = check_inputs(on_disk["features"], mid["labels"], logits=on_disk["logits"])
    N, K = inputs.logits.shape
    real_empty = np.empty

    def empty(shape, *args, **kwargs):
        assert tuple(np.atleast_1d(shape))[:2] != (N, K), "an N×K array was allocated"
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(leep, "KEEP_BYTES", 0)
    monkeypatch.setattr(leep, "BLOCK_BYTES", 300 * 8 * K)  # 300-row blocks: several, the last one short
    monkeypatch.setattr(np, "empty", empty)
    streamed = get_metric("leep").compute(inputs)
    assert streamed == pytest.approx(kept, rel=1e-12, abs=0)


def _capped(name: str, cap: int, monkeypatch) -> None:
    monkeypatch.setitem(metrics._REGISTRY, name, dataclasses.replace(get_metric(name), max_rows=cap))


def test_above_the_cap_a_seeded_stratified_subsample_warns_once(mid: dict, monkeypatch) -> None:
    _capped("knn", 500, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = get_metric("knn")(mid["features"], mid["labels"])
    said = [w for w in caught if issubclass(w.category, TransferabilityWarning)]
    assert len(said) == 1
    assert "cap of 500" in str(said[0].message) and "seed 0" in str(said[0].message)
    with pytest.warns(TransferabilityWarning, match="cap of 500"):
        again = get_metric("knn")(mid["features"], mid["labels"])
    assert again == first  # deterministic with the seed

    inputs = check_inputs(mid["features"], mid["labels"])
    sub = inputs.subsampled(500)
    assert sub.N == 500
    assert np.array_equal(sub.counts, np.bincount(mid["labels"]) // 4)  # 50 per class: each keeps its share
    assert get_metric("knn").fn(sub) == first  # the score is the metric on exactly that subsample
    other = inputs.subsampled(500, seed=1)
    assert not np.array_equal(other.X, sub.X)


@pytest.mark.parametrize("name", ["knn_reg", "ridge"])
def test_regression_baselines_subsample_above_the_cap(name: str, mid: dict, monkeypatch) -> None:
    """Neither streams (an exact neighbour search; a standardised (N, D) float64 copy and U (N, r)): at
    N = 1,000,000, D = 2048 they took 16 GB; above the cap they score the seeded stratified subsample."""
    from transfersel.metrics._inputs import SUBSAMPLE_CAP

    assert get_metric(name).max_rows == SUBSAMPLE_CAP
    _capped(name, 500, monkeypatch)
    with pytest.warns(TransferabilityWarning, match="cap of 500"):
        capped = get_metric(name)(mid["features"], mid["labels"])
    assert capped == get_metric(name).fn(check_inputs(mid["features"], mid["labels"]).subsampled(500))


def test_scoring_records_the_subsample(mid: dict, monkeypatch) -> None:
    _capped("knn", 500, monkeypatch)
    models = [ModelFeatures(m, mid["features"] * s, mid["labels"]) for m, s in (("a", 1.0), ("b", 0.5))]
    with pytest.warns(TransferabilityWarning, match="cap of 500"):
        out = score_models(models, ["knn", "hscore"])
    assert out.subsampled == {"knn": {"a": 2000, "b": 2000}}
    notes = [n for n in out.notices if "subsample" in n]
    assert notes == [
        "knn: scored a class-stratified subsample of 500 rows, seed 0 (it cannot stream) for a (N = 2000), "
        "b (N = 2000)"
    ]
