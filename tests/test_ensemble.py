"""Ensemble selection (spec §6.2): complementarity maths, greedy picks, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from transfersel.agreement import minmax
from transfersel.ensemble import _Stack, ensemble_probe_accuracy, fisher_features, select, stratified_rows
from transfersel.errors import InputError
from transfersel.metrics import check_inputs
from transfersel.metrics.sfda import regularised_scatter


def _orthogonal_blocks(n: int = 200, widths: tuple[int, ...] = (3, 3)) -> list[np.ndarray]:
    """Column blocks of one random orthonormal, centred basis: mutually orthogonal, each ‖Z‖_F = 1."""
    rng = np.random.default_rng(0)
    R = rng.normal(size=(n, sum(widths)))
    Q, _ = np.linalg.qr(R - R.mean(axis=0))  # orthonormal columns spanning centred vectors: centred too
    blocks, start = [], 0
    for w in widths:
        blocks.append(Q[:, start : start + w] / np.sqrt(w))
        start += w
    return blocks


def test_nuclear_gain_is_one_for_orthogonal_blocks_and_sqrt2_minus_1_for_a_duplicate():
    a, b = _orthogonal_blocks()
    stack = _Stack([a, b, a.copy()])
    assert stack.gain(1, [0], "nuclear") == pytest.approx(1.0, abs=1e-12)
    assert stack.gain(2, [0], "nuclear") == pytest.approx(np.sqrt(2) - 1, abs=1e-12)  # ≈ 0.41 (spec)
    assert stack.gain(0, [], "nuclear") == 1.0
    assert stack.gain(1, [0], "cka") == pytest.approx(1.0, abs=1e-12)
    assert stack.gain(2, [0], "cka") == pytest.approx(0.0, abs=1e-12)
    # Any block partly inside the span of the selected ones gains strictly between the two extremes.
    mixed = (a + b) / np.linalg.norm(a + b)
    g = _Stack([a, mixed]).gain(1, [0], "nuclear")
    assert np.sqrt(2) - 1 < g < 1


def test_fisher_features_are_the_generalised_eigenvectors_of_sb_and_b(vectors):
    v = vectors["small_gauss"]
    X, y = v["features"], v["labels"]
    Z = fisher_features(X, y)
    inputs = check_inputs(X, y)
    C = inputs.C
    assert Z.shape == (X.shape[0], C - 1) and np.linalg.norm(Z) == pytest.approx(1.0)
    assert np.abs(Z.mean(axis=0)).max() < 1e-12
    B, _ = regularised_scatter(inputs)
    d = inputs.class_means - inputs.mean
    Sb = (d.T * (inputs.counts / inputs.N)) @ d
    w, V = scipy.linalg.eigh(Sb, B)
    ref = (np.asarray(X, np.float64) - inputs.mean) @ V[:, ::-1][:, : C - 1]
    ref /= np.linalg.norm(ref)
    # equal up to the sign of each column
    signs = np.sign((Z * ref).sum(axis=0))
    np.testing.assert_allclose(Z * signs, ref, atol=1e-9)


def _zoo(vectors):
    """small_gauss as model 'a'; an exact duplicate 'a_copy'; 'b' and 'c': independent noise models."""
    v = vectors["small_gauss"]
    X, y = v["features"], v["labels"]
    rng = np.random.default_rng(1)
    b = rng.normal(size=(X.shape[0], 32)).astype(np.float32)
    c = rng.normal(size=(X.shape[0], 16)).astype(np.float32)
    return ["a", "a_copy", "b", "c"], [X, X.copy(), b, c], y


def test_greedy_skips_a_duplicate_when_an_orthogonal_model_exists(vectors):
    names, feats, y = _zoo(vectors)
    scores = [0.9, 0.9, 0.8, 0.1]
    ens = select(names, scores, feats, y, k=3, metric="given")
    assert ens.models[:2] == ["a", "b"]  # 'a' before its tied copy (zoo order); then 'b', not the copy
    first, second, third = ens.picks
    assert first.g == 1.0 and first.t == 1.0 and first.objective == 1.0
    assert second.g > 0.6 and second.t == pytest.approx(0.875)
    assert second.objective == pytest.approx(0.5 * second.t + 0.5 * second.g)
    assert ens.top_k_by_score == ("a", "a_copy", "b")
    # the duplicate's complementarity against {'a'} is the spec's √2 − 1 (computed on real Fisher features)
    dup = select(names[:2], scores[:2], feats[:2], y, k=2)
    assert dup.picks[1].g == pytest.approx(np.sqrt(2) - 1, abs=1e-9)
    cka = select(names, scores, feats, y, k=2, complementarity="cka")
    assert cka.models == ["a", "b"] and cka.complementarity == "cka"


def test_selection_is_deterministic_and_nan_scores_are_excluded(vectors):
    names, feats, y = _zoo(vectors)
    scores = [0.9, float("nan"), 0.5, 0.4]
    first = select(names, scores, feats, y, k=3)
    assert first == select(names, scores, feats, y, k=3)
    assert "a_copy" not in first.models and first.excluded == ("a_copy",)
    assert sorted(first.models) == ["a", "b", "c"]
    with pytest.raises(InputError, match="k=4 but 3 model"):
        select(names, scores, feats, y, k=4)


def test_sfda_oneshot_penalises_the_duplicated_pair(vectors):
    names, feats, y = _zoo(vectors)
    ens = select(names, [0.9, 0.9, 0.8, 0.1], feats, y, k=4, mode="sfda-oneshot")
    g = {p.model: p.g for p in ens.picks}
    # removing one of two identical models loses little nuclear norm: both get the lowest contribution
    assert g["a"] == g["a_copy"] == pytest.approx(0.0, abs=1e-9)
    assert g["b"] > 0.5 and ens.models[0] == "b"


def test_minmax_and_stratified_rows():
    np.testing.assert_array_equal(minmax([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(minmax([5.0, 5.0]), [1.0, 1.0])
    assert np.isnan(minmax([1.0, float("nan"), 2.0])[1])
    y = np.repeat([0, 1, 2], [900, 90, 10])
    rows = stratified_rows(y, max_rows=100, seed=0)
    assert list(np.bincount(y[rows])) == [90, 9, 1]
    assert np.array_equal(rows, stratified_rows(y, max_rows=100, seed=0)) and np.all(np.diff(rows) > 0)
    assert np.array_equal(stratified_rows(y, max_rows=5000), np.arange(1000))


def test_ensemble_probe_scores_complementary_models_above_either_alone(vectors):
    """Spec §6.3's measure: two halves of the same features, each a 'model', are worth more together."""
    v = vectors["small_gauss"]
    X, y = v["features"], v["labels"]
    cut = int(0.7 * len(y))
    halves = [X[:, :32], X[:, 32:]]

    def probe(models, labels=y):
        return ensemble_probe_accuracy([m[:cut] for m in models], labels[:cut], [m[cut:] for m in models],
                                       labels[cut:])  # fmt: skip

    alone = [probe([h]) for h in halves]
    together = probe(halves)
    assert together > max(alone) + 3.0 and min(alone) > 80.0
    names = np.array([f"class {c}" for c in range(y.max() + 1)])
    assert probe(halves, names[y]) == together  # any label values
    noise = np.random.default_rng(0).normal(size=(len(y), 32))
    assert probe([noise]) < 100 / 6 + 10  # chance is 1/6
    with pytest.raises(InputError, match="never occur in train"):
        ensemble_probe_accuracy([X[:cut]], y[:cut], [X[cut:]], y[cut:] + 100)
