"""Pool metrics NCTI and ETran (spec selection.md §3): components, combine, the registry's pool flag."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import VECTOR_NAMES, VECTORS

from transfersel.errors import InputError
from transfersel.metrics import get_metric, list_metrics

EXPECTED = json.loads((VECTORS / "expected_components.json").read_text())
RTOL = {("ncti", "nuc"): 1e-4, ("ncti", "compact"): 1e-4}


@pytest.mark.parametrize("name", VECTOR_NAMES)
@pytest.mark.parametrize("metric", ["ncti", "etran"])
def test_components_match_reference(vectors, metric, name):
    v = vectors[name]
    before = v["features"].copy()
    got = get_metric(metric).components(v["features"], v["labels"])
    ref = EXPECTED[name][metric]
    ref = dict(zip(["nuc", "sfda", "compact"], ref, strict=True)) if isinstance(ref, list) else ref
    assert list(got) == list(ref)  # the order check_metrics.py compares in
    for k, r in ref.items():
        assert got[k] == pytest.approx(r, rel=RTOL.get((metric, k), 1e-6)), (metric, name, k)
    assert np.array_equal(v["features"], before)


def test_ncti_eigen_solver_matches_scikit_learn(vectors):
    """Small-variance features select the shrinkage (``eigen``) LDA; the vectors only reach ``svd``."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    v = vectors["small_gauss"]
    X, y = v["features"].astype(np.float64) * 0.02, v["labels"]
    pca = PCA(n_components=64, svd_solver="full")
    Z = pca.fit_transform(X)
    t = max(np.exp(-pca.explained_variance_[:32].sum()), 1e-10)
    assert t > 1e-10
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(t))
    L = lda.fit_transform(Z, y)
    L -= L.mean(axis=0)
    P = lda.predict_proba(Z)
    want = {
        "nuc": np.linalg.norm(L, ord="nuc"),
        "sfda": P[np.arange(len(y)), y].mean(),
        "compact": np.log(sum(np.linalg.norm(P[y == c], ord="nuc") for c in np.unique(y))),
    }
    got = get_metric("ncti").components(X, y)
    for k, w in want.items():
        assert got[k] == pytest.approx(w, rel=1e-6), k


def test_etran_lda_variant_is_the_shrunk_lda(vectors):
    v = vectors["small_gauss"]
    ref = get_metric("etran").components(v["features"], v["labels"])
    lda = get_metric("etran").components(v["features"], v["labels"], variant="lda")
    assert lda["energy"] == ref["energy"] and lda["lda"] != ref["lda"]
    with pytest.raises(InputError, match="variant"):
        get_metric("etran").components(v["features"], v["labels"], variant="nope")


def test_pool_metric_called_plainly_says_what_to_use(vectors):
    v = vectors["small_gauss"]
    for name in ("ncti", "etran"):
        with pytest.raises(InputError, match="components") as err:
            get_metric(name)(v["features"], v["labels"])
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="not a pool metric"):
        get_metric("sfda").components(v["features"], v["labels"])


def test_registry_flags():
    assert get_metric("ncti").pool and get_metric("etran").pool and not get_metric("sfda").pool
    assert {m.name for m in list_metrics(pool=True)} == {"ncti", "etran", "auto"}
    assert not {"ncti", "etran", "auto"} & {m.name for m in list_metrics()}  # plain listing: callable metrics
    assert len(list_metrics(pool=None)) == len(list_metrics()) + 3


def test_combine_min_max(vectors):
    ncti = get_metric("ncti")
    comps = {n: ncti.components(vectors[n]["features"], vectors[n]["labels"]) for n in VECTOR_NAMES}
    scores = get_metric("ncti").combine(comps)
    assert list(scores) == VECTOR_NAMES

    def mm(key, n):
        vals = [c[key] for c in comps.values()]
        return (comps[n][key] - min(vals)) / (max(vals) - min(vals))

    for n in VECTOR_NAMES:
        assert scores[n] == pytest.approx(mm("sfda", n) + mm("nuc", n) - mm("compact", n))
    etran = get_metric("etran").combine({"a": {"lda": 0.9, "energy": 1.0}, "b": {"lda": 0.5, "energy": 3.0}})
    assert etran == pytest.approx({"a": 0.85, "b": 0.15})


def test_combine_edge_cases():
    m = get_metric("etran")
    with pytest.raises(InputError, match="pool of candidate models"):
        m.combine({"only": {"lda": 0.9, "energy": 1.0}})
    with pytest.raises(InputError, match="pool of candidate models"):
        m.combine({})
    equal = m.combine({"a": {"lda": 0.7, "energy": 2.0}, "b": {"lda": 0.7, "energy": 2.0}})
    assert equal == {"a": 0.0, "b": 0.0}  # no information, no NaN
    half = m.combine({"a": {"lda": 0.7, "energy": 1.0}, "b": {"lda": 0.7, "energy": 2.0}})
    assert half == pytest.approx({"a": 0.0, "b": 0.15})  # the tied component adds 0 to both
    bad = m.combine({"a": {"lda": 0.7, "energy": 1.0}, "b": {"lda": math.nan, "energy": 2.0},
                     "c": {"lda": 0.9, "energy": 3.0}})
    assert math.isnan(bad["b"]) and bad["c"] == pytest.approx(1.0) and bad["a"] == pytest.approx(0.0)
    with pytest.raises(InputError, match="lacks component 'energy'"):
        m.combine({"a": {"lda": 0.7}, "b": {"lda": 0.8}})
    with pytest.raises(InputError, match="not a pool metric"):
        get_metric("sfda").combine({"a": {}, "b": {}})
