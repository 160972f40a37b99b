"""NLEEP (spec §2.4): the §4.5 statistical tests, determinism, degenerate regimes, and the EM
against scikit-learn's GaussianMixture from the same k-means labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import get_metric
from transfersel.metrics.nleep import gmm_posteriors

SEEDS = range(5)


def scores(v: dict, **options) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferabilityWarning)
        return np.array([get_metric("nleep")(v["features"], v["labels"], seed=s, **options) for s in SEEDS])


@pytest.mark.parametrize("name", ["small_gauss", "relu_gauss"])
def test_default_form_within_reference_seed_spread(vectors, name):
    v = vectors[name]
    m3 = np.mean(v["reference"]["nleep"]["seeds_0_1_2"])
    s = scores(v)
    assert np.isfinite(s).all() and (s > 0).all() and (s <= 1).all()
    assert np.abs(s - m3).max() <= 0.05, (s, m3)
    assert abs(s.mean() - m3) <= 0.03, (s.mean(), m3)


@pytest.mark.parametrize("name", ["small_gauss", "relu_gauss"])
def test_log_form_within_reference_spread(vectors, name):
    v = vectors[name]
    r = v["reference"]["nleep_gr"]
    s = scores(v, log=True)
    assert np.isfinite(s).all() and (s <= 0).all()
    assert np.abs(s - r).max() <= 0.10, (s, r)
    assert abs(s.mean() - r) <= 0.06, (s.mean(), r)


def test_bit_deterministic_per_seed_and_seed_matters(vectors):
    v = vectors["relu_gauss"]
    a = get_metric("nleep")(v["features"], v["labels"], seed=3)
    assert a == get_metric("nleep")(v["features"], v["labels"], seed=3)
    assert a != get_metric("nleep")(v["features"], v["labels"], seed=4)


@pytest.mark.parametrize("name", ["mid_gauss", "wide_random"])
def test_degenerate_vectors_warn_and_stay_in_range(vectors, name):
    v = vectors[name]
    with pytest.warns(TransferabilityWarning, match=r"nleep: N/K = .* ≤ d = "):
        s = get_metric("nleep")(v["features"], v["labels"])
    assert np.isfinite(s) and 0 < s <= 1


def test_em_matches_scikit_learn_from_the_same_kmeans_labels(vectors):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    X = vectors["small_gauss"]["features"][:300].astype(np.float64)
    Z = PCA(n_components=6).fit_transform(X)
    K = 8
    # GaussianMixture(init_params="kmeans", random_state=0) initialises from exactly these labels
    labels = KMeans(n_clusters=K, n_init=1, random_state=0).fit(Z).labels_
    gm = GaussianMixture(K, covariance_type="full", reg_covar=1e-6, tol=1e-3, max_iter=100, random_state=0)
    expected = gm.fit(Z).predict_proba(Z)
    assert gm.converged_ and gm.n_iter_ > 2
    R = gmm_posteriors(Z, labels.astype(np.int64), K, reg_covar=1e-6, max_iter=100)
    np.testing.assert_allclose(R, expected, rtol=0, atol=1e-6)


def test_a_mixture_larger_than_memory_is_refused_in_one_line_before_any_work(vectors, monkeypatch):
    # at 1M x 2048 near-isotropic features the PCA keeps ~1,600 dims: 500 components' covariances need
    # ~40 GiB and the kernel killed the process; now it is refused up front with the fix
    import transfersel.metrics.nleep as nleep_module
    from transfersel.errors import InputError

    v = vectors["small_gauss"]
    calls = []
    monkeypatch.setattr(nleep_module, "kmeans_labels", lambda *a, **k: calls.append(a) or None)
    monkeypatch.setattr(nleep_module, "available_memory", lambda: 1024)
    refusal = r"nleep: \d+ full-covariance components .* GiB.*variance=, now 0.8.*now 5"
    with pytest.raises(InputError, match=refusal) as err:
        get_metric("nleep")(v["features"], v["labels"])
    assert "\n" not in str(err.value) and not calls
    monkeypatch.undo()
    assert np.isfinite(get_metric("nleep")(v["features"], v["labels"]))
    assert nleep_module.available_memory() is None or nleep_module.available_memory() > 0
