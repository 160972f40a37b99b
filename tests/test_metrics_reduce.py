"""``reduce`` (spec selection.md §2): the projection, the reduce identity, ``"auto"`` and saturation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import _reduce, auto_dim, get_metric, reduce_features, saturation, score
from transfersel.metrics._inputs import check_inputs

# Metrics whose value is invariant to centring the features, rotating them and dropping directions of
# zero variance, so projecting on d ≥ rank(X − μ) principal axes cannot change them:
#   hscore (tr(cov⁺ cov_g)), transrate (log-determinants of globally centred Grams), gbc (its own PCA
#   to 64 dims, per-axis signs irrelevant), ncti (PCA 64, then LDA with per-column scales: signs only),
#   etran (nearest-mean rule with identity covariance; the energy uses the unreduced features).
# Not invariant: logme (raw, uncentred features: no intercept), emms (per-column standardisation),
# hscore_reg (Ledoit–Wolf target tr(S)/D depends on D), sfda (shrinkage target tr(Sw)/D depends on D
# and its power-iteration start Sw·1 on the basis).
INVARIANT = ["hscore", "transrate", "gbc"]
INVARIANT_POOL = ["ncti", "etran"]


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferabilityWarning)
        return fn(*args, **kw)


@pytest.mark.parametrize("d", [299, 400])
@pytest.mark.parametrize("metric", INVARIANT)
def test_reduce_identity_plain(vectors, metric, d):
    v = vectors["wide_random"]  # N = 300 < D = 512: rank(X − μ) = 299 < D, so the projection is real
    f, y = v["features"], v["labels"]
    base = quiet(get_metric(metric), f, y)
    reduced = quiet(get_metric(metric), f, y, reduce=d)
    assert reduced == pytest.approx(base, rel=1e-6, abs=1e-9)
    assert get_metric(metric).describe_reduce(300, 512, 5, d) == 299


@pytest.mark.parametrize("metric", INVARIANT_POOL)
def test_reduce_identity_pool(vectors, metric):
    v = vectors["wide_random"]
    m = get_metric(metric)
    base = quiet(m.components, v["features"], v["labels"])
    reduced = quiet(m.components, v["features"], v["labels"], reduce=299)
    assert reduced == pytest.approx(base, rel=1e-6)


def test_reduce_changes_a_non_invariant_metric_and_saturated_sfda(vectors):
    """The identity is not vacuous: logme sees the centring, and sfda leaves its saturated regime."""
    v = vectors["wide_random"]
    f, y = v["features"], v["labels"]
    assert quiet(get_metric("logme"), f, y, reduce=299) != pytest.approx(quiet(get_metric("logme"), f, y))
    assert quiet(get_metric("sfda"), f, y) > 0.99
    assert quiet(get_metric("sfda"), f, y, reduce=16) < 0.9


def test_reduce_auto_runs_records_and_shares_one_projection(vectors, monkeypatch):
    # the fitted fraction (selection.json) may not reduce these 2000 x 256 vectors: pin one that does
    monkeypatch.setattr(_reduce, "_rule", lambda: {"fraction": 0.1})
    v = vectors["mid_gauss"]
    N, D, C = 2000, 256, 10
    d = auto_dim(N, D, C)
    assert C <= d < D
    for name in ("sfda", "logme", "hscore"):
        assert get_metric(name).describe_reduce(N, D, C, "auto") == d
    assert get_metric("leep").describe_reduce(N, D, C, "auto") is None  # not a D×D metric
    inputs = check_inputs(v["features"], v["labels"])
    r = inputs.reduced("auto")
    assert r.X.shape == (N, d) and inputs.reduced(d) is r  # cached: shared by every metric
    assert inputs.reduced(None) is inputs and inputs.reduced(D) is inputs
    scores = quiet(score, v["features"], v["labels"], ["sfda", "hscore", "leep"], reduce="auto",
                   logits=v["logits"])
    assert scores["hscore"] == pytest.approx(get_metric("hscore").compute(inputs.reduced(d)))
    assert scores["leep"] == pytest.approx(quiet(get_metric("leep"), v["features"], v["labels"],
                                                 logits=v["logits"]))


def test_reduce_features_is_an_exact_deterministic_pca(vectors):
    f = vectors["relu_gauss"]["features"]
    before = f.copy()
    Z = reduce_features(f, 10)
    assert np.array_equal(f, before)
    assert Z.shape == (f.shape[0], 10)
    cov = Z.T @ Z / len(Z)
    var = np.diag(cov)
    assert np.all(np.diff(var) <= 0)  # descending variance
    assert np.abs(cov - np.diag(var)).max() < 1e-8 * var[0]  # uncorrelated axes
    Xc = f.astype(np.float64) - f.mean(axis=0, dtype=np.float64)
    top = np.linalg.eigvalsh(Xc.T @ Xc / len(f))[::-1][:10]
    assert var == pytest.approx(top, rel=1e-8)
    V = np.linalg.lstsq(Xc, Z, rcond=None)[0]  # the axes; each signed by its largest loading
    assert np.all(V[np.abs(V).argmax(axis=0), np.arange(10)] > 0)
    assert np.array_equal(reduce_features(f, 10), Z)


def test_reduce_does_not_mutate_inputs(vectors):
    v = vectors["small_gauss"]
    before = v["features"].copy()
    quiet(get_metric("sfda"), v["features"], v["labels"], reduce=8)
    quiet(get_metric("ncti").components, v["features"], v["labels"], reduce="auto")
    assert np.array_equal(v["features"], before)


@pytest.mark.parametrize("bad", [0, -3, "half", 2.5, True])
def test_bad_reduce_is_a_clear_error(vectors, bad):
    v = vectors["small_gauss"]
    with pytest.raises(InputError, match="reduce must be"):
        get_metric("hscore")(v["features"], v["labels"], reduce=bad)


def test_saturation_notice_for_n_minus_c_at_most_d():
    line = saturation("sfda", 1000, 1280, 10)
    assert line is not None and "\n" not in line
    assert "N - C = 990 <= D = 1280" in line and "saturated" in line and "--reduce auto" in line
    assert saturation("sfda", 1000, auto_dim(1000, 1280, 10), 10) is None  # the auto rule leaves it
    assert saturation("hscore", 300, 512, 5) is not None and saturation("emms", 300, 512, 5) is not None
    assert saturation("hscore", 2000, 256, 10) is None
    assert saturation("leep", 10, 1000, 2) is None  # no such regime
